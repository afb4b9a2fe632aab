//! The `rustmq-etl` binary, run as a user runs it.

mod server;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rustmq-etl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn validate_accepts_both_design_examples_in_both_formats() {
    for dir in ["pipelines", "pipelines-yaml"] {
        let path = fixtures().join(dir);
        let out = run(&["validate", "--config", path.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.ends_with(
                "valid: 2 pipelines (2 enabled), 5 stages, 7 modules in 2 files; 1 warning\n"
            ),
            "{stdout}"
        );
        assert!(text(&out.stderr).contains("warning: "));
    }
    let single = fixtures().join("pipelines/iot-sensor-processing.json");
    let out = run(&["validate", "--config", single.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout)
        .contains("valid: 1 pipeline (1 enabled), 2 stages, 3 modules in 1 file; 0 warnings"));
}

#[test]
fn validate_lists_every_error_and_exits_1() {
    let path = fixtures().join("config-invalid/many-problems.yaml");
    let out = run(&["validate", "--config", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error: ")).count(),
        15,
        "{stderr}"
    );
    assert!(
        stderr.ends_with("invalid configuration: 15 errors\n"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn explain_reports_bad_lines_and_goes_on() {
    let config = fixtures().join("pipelines");
    let input = concat!(
        r#"{"topic": "iot.sensors.temperature", "payload": {"sensor_type": "temperature", "unit": "celsius"}}"#,
        "\n",
        "{not json\n",
        "\n",
        r#"{"topic": "iot.sensors.pressure", "payload": {"reading": 3}, "timestamp_ms": 5}"#,
        "\n",
        r#"{"topic": 7, "payload": ""}"#,
        "\n",
    );
    let out = run(
        &[
            "explain",
            "--config",
            config.to_str().unwrap(),
            "--input",
            "-",
            "--now",
            "10",
        ],
        Some(input),
    );
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "one object per non-blank input line");
    assert_eq!(lines[0]["line"], 1);
    assert_eq!(lines[0]["modules"][1]["module"], "temperature-converter");
    assert_eq!(lines[0]["modules"][1]["priority"], 1);
    assert_eq!(lines[1]["line"], 2);
    assert!(lines[1]["error"]
        .as_str()
        .unwrap()
        .contains("key must be a string"));
    assert_eq!(lines[2]["line"], 4);
    assert_eq!(lines[2]["modules"][0]["module"], "pressure-normalizer");
    assert_eq!(lines[3]["line"], 5);
    assert!(lines[3]["error"].as_str().unwrap().contains("invalid type"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: -:2: key must be a string"),
        "{stderr}"
    );
    assert!(stderr.contains("-: 2 bad lines"), "{stderr}");
}

#[test]
fn explain_with_an_invalid_configuration_fails_before_reading() {
    let config = fixtures().join("config-invalid/many-problems.yaml");
    let out = run(
        &[
            "explain",
            "--config",
            config.to_str().unwrap(),
            "--input",
            "-",
        ],
        Some("{}\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let missing = run(
        &[
            "explain",
            "--config",
            fixtures().join("pipelines").to_str().unwrap(),
            "--input",
            "/nonexistent.jsonl",
        ],
        None,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cannot open /nonexistent.jsonl"));
}

fn modules() -> String {
    fixtures().join("modules").to_str().unwrap().to_owned()
}

/// `run` on design.md's examples: the delivered messages, field by field, in
/// input order, and the accounting line.
#[test]
fn run_transforms_the_sample_messages_with_the_real_modules() {
    let config = fixtures().join("pipelines");
    let input = fixtures().join("messages/sample.jsonl");
    let out = run(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--modules",
            &modules(),
        ],
        None,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            r#"{"topic":"iot.sensors.temperature","key":"dev-1","headers":{"content-type":"application/json","x-sensor-valid":"true"},"payload":{"sensor_type":"temperature","unit":"fahrenheit","reading":70.7},"timestamp_ms":1764201600000}"#,
            r#"{"topic":"iot.sensors.pressure","key":"dev-2","payload":{"sensor_type":"pressure","unit":"hPa","reading":1013.2},"timestamp_ms":1764201600500}"#,
            r#"{"topic":"events.web.content","headers":{"content-type":"application/json","client_ip":"203.0.113.7","x-validation":"passed","geo-country":"unknown","content-bytes":"46","content-kind":"json","content-words":"1","content-lines":"1"},"payload":{"user":"u-17","action":"view","body":"Hello"}}"#,
            r#"{"topic":"logs.mobile.app","headers":{"client_ip":"198.51.100.23","geo-country":"unknown"},"payload":"plain text log line"}"#,
            r#"{"topic":"*","payload":"\u0000\u0001\u0002\u0003"}"#,
        ]
    );
    assert!(
        stderr.contains("5 in = 5 delivered + 0 dropped + 0 dead-lettered"),
        "{stderr}"
    );
    assert!(stderr.contains("sensor-data-validator"), "{stderr}");

    // `run`'s output is `run`'s input: a second run over it changes only what
    // the modules change again (the readings are already converted).
    let again = run(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--input",
            "-",
            "--modules",
            &modules(),
        ],
        Some(&text(&out.stdout)),
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let first: Vec<rustmq_etl_core::Message> = lines
        .iter()
        .map(|l| rustmq_etl_core::Message::from_json_line(l).unwrap())
        .collect();
    let second: Vec<rustmq_etl_core::Message> = text(&again.stdout)
        .lines()
        .map(|l| rustmq_etl_core::Message::from_json_line(l).unwrap())
        .collect();
    assert_eq!(first.len(), second.len());
    assert_eq!(
        first[0].payload, second[0].payload,
        "already Fahrenheit: unchanged"
    );
}

/// Dead letters go to their own file; bad lines are reported with their line
/// numbers, the others processed, and the run exits 1.
#[test]
fn run_writes_dead_letters_apart_and_reports_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.yaml");
    std::fs::write(
        &config,
        "pipeline_id: p\nerror_handling: SendToDeadLetter\nstages: [{priority: 0, modules: [{module_id: hostile-trap, topic_filters: [{filter_type: Exact, pattern: trap}]}]}]\n",
    )
    .unwrap();
    let dead = dir.path().join("dead.jsonl");
    let input = "{\"topic\":\"trap\",\"payload\":\"attack\"}\nnot json\n{\"topic\":\"ok\",\"payload\":\"fine\"}\n{\"topic\":\"t\"}\n";
    let out = run(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--input",
            "-",
            "--modules",
            &modules(),
            "--dead-letter",
            dead.to_str().unwrap(),
            "--trace",
        ],
        Some(input),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("-:2: expected ident"), "{stderr}");
    assert!(stderr.contains("-:4: missing field `payload`"), "{stderr}");
    assert!(
        stderr.contains(
            "2 in = 1 delivered + 0 dropped + 1 dead-lettered; 2 bad input lines not processed"
        ),
        "{stderr}"
    );
    assert_eq!(
        text(&out.stdout),
        "{\"topic\":\"ok\",\"payload\":\"fine\"}\n"
    );
    let letter =
        rustmq_etl_core::Message::from_json_line(std::fs::read_to_string(&dead).unwrap().trim())
            .unwrap();
    assert_eq!(letter.topic, "etl.dead-letter");
    assert_eq!(letter.headers.get("etl-dlq-error-kind"), Some("trap"));
    assert_eq!(letter.headers.get("etl-dlq-original-topic"), Some("trap"));
    // The trace of line 1, as one JSON line.
    let trace: serde_json::Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|t| t["line"] == 1)
        .expect("a trace line for line 1");
    assert_eq!(trace["result"], "dead_lettered");
    assert_eq!(trace["trace"][0]["failed"], "trap");
    assert_eq!(trace["trace"][0]["action"], "dead_lettered");
}

/// A module that is not there stops the run before anything is read.
#[test]
fn run_without_its_modules_says_which_and_where() {
    let config = fixtures().join("pipelines");
    let empty = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--input",
            "-",
            "--modules",
            empty.path().to_str().unwrap(),
        ],
        Some(""),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("sensor-data-validator.wasm"), "{stderr}");
    assert!(stderr.contains("could not be loaded"), "{stderr}");
}

/// The README's `cargo run … rustmq-etl -- …` commands, run as written (with
/// this test's build of the binary) from the repository root: each succeeds.
/// `serve` is started on a free port instead of its default one, answers
/// `/health` and `/v1/process`, and stops with exit 0 on SIGTERM.
#[test]
fn the_readme_commands_work_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands: Vec<Vec<String>> = readme
        .lines()
        .filter(|l| l.starts_with("cargo run ") && l.contains("-p rustmq-etl --"))
        .map(|l| {
            let args = l.split(" -- ").nth(1).unwrap();
            let args = args.split('#').next().unwrap();
            args.split_whitespace().map(str::to_owned).collect()
        })
        .collect();
    assert!(commands.len() >= 3, "{commands:?}");
    assert!(
        commands.iter().any(|c| c[0] == "run"),
        "the main job is `run`"
    );
    for args in commands {
        if args[0] == "serve" {
            let args: Vec<&str> = args[1..].iter().map(String::as_str).collect();
            let server = server::Server::start_in(&root, &args);
            assert_eq!(server.send("GET", "/health", "").0, 200);
            let (status, body) = server.send(
                "POST",
                "/v1/process",
                r#"{"topic":"sensors/temperature/room1","payload":{"temperature":20.0}}"#,
            );
            assert_eq!(status, 200, "{body}");
            assert!(body.contains(r#""result":"delivered""#), "{body}");
            assert!(server.stop().success(), "{}", server.log());
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_rustmq-etl"))
            .args(&args)
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stdout.is_empty(), "{args:?} printed nothing");
    }
}
