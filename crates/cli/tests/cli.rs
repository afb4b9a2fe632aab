//! The `rustmq-etl` binary, run as a user runs it.

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
