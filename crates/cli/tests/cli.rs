//! The `rustmq-etl` binary, run as a user runs it.

mod server;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../../fixtures")
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = server::tool()
        .args(args)
        // The tool's own log levels, whatever the shell running the tests sets.
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // A command may end without reading its input (one that refuses its
    // configuration first): the pipe is then closed, which is no failure.
    if let Err(e) = input.write_all(stdin.unwrap_or("").as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
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
        let (stdout, _) = exited(&out, 0);
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
        .contains("valid: 1 pipeline (1 enabled), 2 stages, 3 modules in 1 file; 0 warnings")); // A disabled pipeline is valid, and not counted as enabled.
    let dir = tempfile::tempdir().unwrap();
    for (file, id, enabled) in [("a.yaml", "a", "true"), ("b.yaml", "b", "false")] {
        std::fs::write(
            dir.path().join(file),
            format!("pipeline_id: {id}\nenabled: {enabled}\nstages: [{{priority: 0, modules: [{{module_id: identity}}]}}]\n"),
        )
        .unwrap();
    }
    let out = run(
        &["validate", "--config", dir.path().to_str().unwrap()],
        None,
    );
    exited(&out, 0);
    assert!(
        text(&out.stdout)
            .contains("valid: 2 pipelines (1 enabled), 2 stages, 2 modules in 2 files; 0 warnings"),
        "{}",
        text(&out.stdout)
    );
}

/// A reader that closed its end of the pipe before `validate` wrote its
/// verdict: no panic (it exited 101), the exit code says the configuration
/// is valid.
#[test]
fn validate_to_a_closed_pipe_exits_by_its_verdict() {
    let path = fixtures().join("pipelines");
    let mut child = server::tool()
        .args([
            "validate",
            "--config",
            path.to_str().unwrap(),
            "--modules",
            &modules(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // (Loading the modules takes the child far longer than this.)
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let (_, stderr) = exited(&out, 0);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn validate_lists_every_error_and_exits_1() {
    let path = fixtures().join("config-invalid/many-problems.yaml");
    let out = run(&["validate", "--config", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error: ")).count(),
        14,
        "{stderr}"
    );
    assert!(
        stderr.ends_with("invalid configuration: 14 errors\n"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// A module whose file is not in the modules directory does not stop `run`
/// (execution.md: a module not found fails its calls `unavailable`): it is
/// named in a warning, and each message reaching it is handled by its
/// pipeline's strategy. A directory that is not there stops the run.
#[test]
fn run_warns_of_a_module_not_found_and_fails_its_calls_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    std::fs::copy(
        fixtures().join("modules/identity.wasm"),
        modules.join("identity.wasm"),
    )
    .unwrap();
    let config = dir.path().join("p.yaml");
    std::fs::write(
        &config,
        "pipeline_id: p\nerror_handling: SendToDeadLetter\nstages:\n\
         - {priority: 0, modules: [{module_id: identity}]}\n\
         - {priority: 1, modules: [{module_id: gone, \
         topic_filters: [{filter_type: Prefix, pattern: a.}]}]}\n",
    )
    .unwrap();
    let args = |modules: &str| {
        vec![
            "run".to_owned(),
            "--config".to_owned(),
            config.to_str().unwrap().to_owned(),
            "--modules".to_owned(),
            modules.to_owned(),
            "--input".to_owned(),
            "-".to_owned(),
        ]
    };
    let input = "{\"topic\":\"a.x\",\"payload\":\"1\"}\n{\"topic\":\"b.x\",\"payload\":\"2\"}\n";
    let argv = args(modules.to_str().unwrap());
    let out = run(
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(input),
    );
    let (_, stderr) = exited(&out, 0);
    assert!(
        stderr.contains(r#"warning: module "gone": cannot read "#)
            && stderr.contains(r#"(as listed in pipeline "p", stage 1)"#),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 module could not be loaded from"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 in = 1 delivered + 0 dropped + 1 dead-lettered"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["topic"], "etl.dead-letter");
    assert_eq!(lines[0]["headers"]["etl-dlq-error-kind"], "unavailable");
    assert_eq!(lines[0]["headers"]["etl-dlq-module"], "gone");
    assert_eq!(lines[1]["topic"], "b.x", "not selected: delivered");

    let nowhere = dir.path().join("nowhere");
    let argv = args(nowhere.to_str().unwrap());
    let out = run(
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(input),
    );
    let (_, stderr) = exited(&out, 1);
    assert!(stderr.contains("no such directory of modules"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// A module that does not compile is not loaded: as for one not found, its
/// calls fail `unavailable` (execution.md: "not loaded, not found") and the
/// run goes on with a warning saying why; `validate --modules` calls it an
/// error.
#[test]
fn run_warns_of_a_module_that_does_not_compile_and_fails_its_calls_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    std::fs::write(modules.join("broken.wasm"), b"not a module").unwrap();
    let config = dir.path().join("p.yaml");
    std::fs::write(
        &config,
        "pipeline_id: p\nerror_handling: SendToDeadLetter\n\
         stages: [{priority: 0, modules: [{module_id: broken}]}]\n",
    )
    .unwrap();
    let (config, modules) = (config.to_str().unwrap(), modules.to_str().unwrap());
    let out = run(
        &[
            "run",
            "--config",
            config,
            "--modules",
            modules,
            "--input",
            "-",
        ],
        Some("{\"topic\":\"t\",\"payload\":\"1\"}\n"),
    );
    let (_, stderr) = exited(&out, 0);
    assert!(
        stderr.contains(r#"warning: module "broken": "#)
            && stderr.contains(r#"(as listed in pipeline "p", stage 0)"#)
            && stderr.contains("1 module could not be loaded from")
            && !stderr.contains("--modules sets the directory"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 in = 0 delivered + 0 dropped + 1 dead-lettered"),
        "{stderr}"
    );
    let letter: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(letter["headers"]["etl-dlq-error-kind"], "unavailable");
    let why = letter["headers"]["etl-dlq-error"].as_str().unwrap();
    assert!(why.starts_with("the module was not loaded: "), "{why}");

    let out = run(
        &["validate", "--config", config, "--modules", modules],
        None,
    );
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(r#"error: module "broken": "#), "{stderr}");
}

/// Compiled modules are kept between runs (docs/abi.md, "The artifact
/// cache"): in `--artifact-cache DIR`, made private to the user; by default
/// in `$XDG_CACHE_HOME/rustmq-etl`, and a default one that cannot be used is
/// only a warning, while a named one stops the start.
#[test]
fn compiled_modules_are_kept_in_a_private_artifact_cache() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = fixtures().join("pipelines");
    let input = fixtures().join("messages/sample.jsonl");
    let modules = modules();
    let run_with = |xdg: &Path, cache: &[&str]| {
        let mut args = vec![
            "run",
            "--config",
            config.to_str().unwrap(),
            "--modules",
            &modules,
            "--input",
            input.to_str().unwrap(),
        ];
        args.extend_from_slice(cache);
        server::tool()
            .args(&args)
            .env("XDG_CACHE_HOME", xdg)
            .output()
            .unwrap()
    };
    let artifacts = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter(|e| {
                        e.as_ref()
                            .unwrap()
                            .path()
                            .extension()
                            .is_some_and(|x| x == "artifact")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let named = dir.path().join("named");
    let first = run_with(dir.path(), &["--artifact-cache", named.to_str().unwrap()]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    // The seven modules of the fixtures, and the key that authenticates them.
    assert_eq!(artifacts(&named), 7);
    assert!(named.join("key").is_file());
    let mode = std::fs::metadata(&named).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // From the cache: the same answers.
    let second = run_with(dir.path(), &["--artifact-cache", named.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert_eq!(second.stdout, first.stdout);
    assert!(
        !dir.path().join("rustmq-etl").exists(),
        "only the named one"
    );
    // Kept within --artifact-cache-max-mib: at 0, each artifact stored
    // removes the others, and the one just stored stays.
    let small = dir.path().join("small");
    let cache = ["--artifact-cache", small.to_str().unwrap()];
    let kept_small = run_with(
        dir.path(),
        &[&cache[..], &["--artifact-cache-max-mib", "0"]].concat(),
    );
    assert_eq!(
        kept_small.status.code(),
        Some(0),
        "{}",
        text(&kept_small.stderr)
    );
    assert_eq!(kept_small.stdout, first.stdout);
    assert_eq!(artifacts(&small), 1);

    // The default, under $XDG_CACHE_HOME; none with --no-artifact-cache.
    let xdg = dir.path().join("xdg");
    let none = run_with(&xdg, &["--no-artifact-cache"]);
    assert_eq!(none.status.code(), Some(0), "{}", text(&none.stderr));
    assert!(!xdg.exists());
    let default = run_with(&xdg, &[]);
    assert_eq!(default.status.code(), Some(0), "{}", text(&default.stderr));
    assert_eq!(artifacts(&xdg.join("rustmq-etl")), 7);
    assert_eq!(default.stdout, first.stdout);

    // A cache others may write: the default is only a warning...
    std::fs::set_permissions(
        xdg.join("rustmq-etl"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let open = run_with(&xdg, &[]);
    let stderr = text(&open.stderr);
    assert_eq!(open.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: the artifact cache") && stderr.contains("compiled afresh"),
        "{stderr}"
    );
    assert_eq!(open.stdout, first.stdout);
    // ...a named one stops the start, naming it.
    let xdg_cache = xdg.join("rustmq-etl");
    let refused = run_with(&xdg, &["--artifact-cache", xdg_cache.to_str().unwrap()]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(xdg_cache.to_str().unwrap()), "{stderr}");
    assert!(refused.stdout.is_empty());
}

/// `validate --modules` loads every module as `run` would: each one missing
/// or broken is named, and the configuration is not called valid.
#[test]
fn validate_with_modules_loads_each_and_names_those_that_fail() {
    let config = fixtures().join("pipelines");
    let validate = |modules: &str| {
        run(
            &[
                "validate",
                "--config",
                config.to_str().unwrap(),
                "--modules",
                modules,
            ],
            None,
        )
    };
    let out = validate(&modules());
    exited(&out, 0);
    assert!(
        text(&out.stdout).contains("every module loaded from"),
        "{}",
        text(&out.stdout)
    );
    // Two of the seven: one broken, the others missing.
    let dir = tempfile::tempdir().unwrap();
    for m in ["identity", "temperature-converter"] {
        std::fs::copy(
            fixtures().join(format!("modules/{m}.wasm")),
            dir.path().join(format!("{m}.wasm")),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("sensor-data-validator.wasm"), "garbage").unwrap();
    let out = validate(dir.path().to_str().unwrap());
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("module \"sensor-data-validator\": does not compile"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.contains("cannot read")).count(),
        5,
        "{stderr}"
    );
    assert!(
        stderr.contains("6 modules could not be loaded from"),
        "{stderr}"
    );
    // Missing files: where they are looked for is said.
    assert!(stderr.contains("--modules sets the directory"), "{stderr}");
    assert!(!stderr.contains("cannot start"), "{stderr}");
    // No such directory: said, and only `run` adds that it cannot start.
    let nowhere = dir.path().join("nowhere");
    let nowhere = nowhere.to_str().unwrap();
    for (command, starts) in [("validate", false), ("run", true)] {
        let mut args = vec![
            command,
            "--config",
            config.to_str().unwrap(),
            "--modules",
            nowhere,
        ];
        if command == "run" {
            args.extend(["--input", "-"]);
        }
        let out = run(&args, Some(""));
        assert_eq!(out.status.code(), Some(1), "{command}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "error: {nowhere}: no such directory of modules (--modules sets the directory"
            )),
            "{command}: {stderr}"
        );
        assert_eq!(
            stderr.contains("cannot start: no directory of modules"),
            starts,
            "{command}: {stderr}"
        );
    }
    // One file listed with two settings: each listing's error said, the
    // file counted once, as `run` counts it.
    let twice = write_config(
        dir.path(),
        "pipeline_id: a\nstages: [{priority: 0, modules: [{module_id: ghost}, {module_id: ghost, instance_config: {custom_config: 1}}]}]\n",
    );
    let out = run(
        &[
            "validate",
            "--config",
            twice.to_str().unwrap(),
            "--modules",
            &modules(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("module \"ghost\": cannot read").count(),
        2,
        "{stderr}"
    );
    assert!(
        stderr.contains("1 module could not be loaded from"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    // Every file there but one that does not compile: nothing about where
    // the files are looked for, which would mislead.
    for entry in std::fs::read_dir(modules()).unwrap() {
        let path = entry.unwrap().path();
        let target = dir.path().join(path.file_name().unwrap());
        if !target.exists() {
            std::fs::copy(&path, target).unwrap();
        }
    }
    let out = validate(dir.path().to_str().unwrap());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("1 module could not be loaded from"),
        "{stderr}"
    );
    assert!(!stderr.contains("--modules sets the directory"), "{stderr}");
}

/// explain names, for a message, the modules that would run (pipeline,
/// priority, module) and every other module with why not; a message's age
/// is read at `--now` (negative too).
#[test]
fn explain_gives_every_skipped_module_and_ages_messages_at_now() {
    let sample = std::fs::read_to_string(sample()).unwrap();
    let first = sample.lines().next().unwrap();
    let out = run(
        &[
            "explain",
            "--config",
            fixtures().join("pipelines").to_str().unwrap(),
            "--input",
            "-",
        ],
        Some(first),
    );
    exited(&out, 0);
    let line: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(
        line["modules"][0],
        serde_json::json!({"pipeline": "iot-sensor-processing", "priority": 0, "module": "sensor-data-validator"})
    );
    let skipped = line["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 5, "{line}");
    assert_eq!(
        skipped[0],
        serde_json::json!({
            "pipeline": "iot-sensor-processing",
            "module": "pressure-normalizer",
            "reason": "no topic filter accepts topic \"iot.sensors.temperature\": Exact \"iot.sensors.pressure\" does not match"
        })
    );

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m, conditional_rules: [{condition_type: MessageAge, operator: LessThan, value: 1000}]}]}]\n",
    );
    let at = |now: &str| {
        let out = run(
            &[
                "explain",
                "--config",
                config.to_str().unwrap(),
                "--input",
                "-",
                "--now",
                now,
            ],
            Some(r#"{"topic":"t","payload":"","timestamp_ms":5000}"#),
        );
        exited(&out, 0);
        serde_json::from_str::<serde_json::Value>(text(&out.stdout).trim()).unwrap()
    };
    for (now, runs) in [("5500", true), ("10000", false), ("-1", true)] {
        let line = at(now);
        assert_eq!(
            line["modules"].as_array().unwrap().len(),
            usize::from(runs),
            "{now}: {line}"
        );
        if !runs {
            assert_eq!(
                line["skipped"][0]["reason"],
                "conditional rule 1 (`message age LessThan 1000`) does not hold: message age is 5000",
                "{line}"
            );
        }
    }
}

/// A reader that closes its pipe early (`explain … | head -1`) ends
/// explain, test-module and bench with an error that says it was standard
/// output, not a bare "Broken pipe".
#[test]
fn a_closed_standard_output_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (messages, _) = keyed_messages(dir.path(), 20_000, |_| "t");
    let config = fixtures().join("pipelines");
    let (config, messages, module) = (
        config.to_str().unwrap(),
        messages.to_str().unwrap(),
        module("identity"),
    );
    let modules = modules();
    for args in [
        &["explain", "--config", config, "--input", messages][..],
        &["test-module", &module, "--input", messages],
        &[
            "bench",
            "--config",
            config,
            "--modules",
            &modules,
            "--input",
            messages,
            "--seconds",
            "0.1",
        ],
    ] {
        let mut child = server::tool()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", args[0]);
        assert!(
            stderr.contains("error: writing to standard output: Broken pipe"),
            "{}: {stderr}",
            args[0]
        );
    }
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
        stderr.contains("\n-:2: not valid JSON: key must be a string")
            || stderr.starts_with("-:2: not valid JSON: key must be a string"),
        "{stderr}"
    );
    // Named as run, test-module and bench name a bad line: it is no
    // error of the command, which goes on.
    assert!(!stderr.contains("error: -:2:"), "{stderr}");
    assert!(stderr.contains("-: 2 bad lines"), "{stderr}");
}

/// Every command that reads JSON Lines reads them alike: a line past 16 MiB
/// is a bad line (named, the others read on), a line that is not UTF-8 is
/// worded the same.
#[test]
fn run_explain_bench_and_test_module_read_lines_alike() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"topic": "t", "payload": "a"}"#;
    let mut input = format!("{good}\n{{\"topic\": \"t\", \"payload\": \"");
    input.push_str(&"x".repeat(16 << 20));
    input.push_str(&format!("\"}}\n{good}\n"));
    let mut bytes = input.into_bytes();
    bytes.extend_from_slice(b"\xff\n");
    let messages = dir.path().join("in.jsonl");
    std::fs::write(&messages, bytes).unwrap();
    let config = fixtures().join("pipelines");
    let module = fixtures().join("modules/identity.wasm");
    let (config, messages, module) = (
        config.to_str().unwrap(),
        messages.to_str().unwrap(),
        module.to_str().unwrap(),
    );
    let modules = modules();
    for args in [
        &[
            "run",
            "--config",
            config,
            "--modules",
            &modules,
            "--input",
            messages,
        ][..],
        &["explain", "--config", config, "--input", messages],
        &["test-module", module, "--input", messages],
        &[
            "bench",
            "--config",
            config,
            "--modules",
            &modules,
            "--input",
            messages,
            "--seconds",
            "1",
        ],
    ] {
        let out = run(args, None);
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{messages}:2: the line is longer than 16777216 bytes"
            )),
            "{}: {stderr}",
            args[0]
        );
        assert!(
            stderr.contains(&format!("{messages}:4: the line is not UTF-8 (at byte 0)")),
            "{}: {stderr}",
            args[0]
        );
        assert!(!stderr.contains(":3:"), "{}: {stderr}", args[0]);
        // Each goes on past the bad lines, and says by its exit code that
        // there were some.
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", args[0]);
    }
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

/// `run` of the configuration at `config` with the sample modules on `input`
/// from stdin, with `extra` arguments.
fn run_on_stdin(config: &Path, extra: &[&str], input: &str) -> Output {
    let modules = modules();
    let mut args = vec![
        "run",
        "--config",
        config.to_str().unwrap(),
        "--input",
        "-",
        "--modules",
        &modules,
    ];
    args.extend(extra);
    run(&args, Some(input))
}

/// `run` of the shipped pipelines and modules on the sample messages, with
/// `extra` arguments.
fn run_samples(extra: &[&str]) -> Output {
    let config = fixtures().join("pipelines");
    let (input, modules) = (sample(), modules());
    let mut args = vec![
        "run",
        "--config",
        config.to_str().unwrap(),
        "--input",
        &input,
        "--modules",
        &modules,
    ];
    args.extend(extra);
    run(&args, None)
}

/// `run --config CONFIG --input INPUT` with the shipped modules.
fn run_of(config: &Path, input: &Path) -> Command {
    let mut command = server::tool();
    command
        .args(["run", "--config"])
        .arg(config)
        .args(["--modules", &modules(), "--input"])
        .arg(input);
    command
}

/// `yaml` written to a configuration file in `dir`.
/// One pipeline of one identity stage, which delivers every message as it is.
const IDENTITY_PIPELINE: &str =
    "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: identity}]}]\n";

fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let config = dir.join("pipeline.yaml");
    std::fs::write(&config, yaml).unwrap();
    config
}

/// `--input` a named pipe: opened once, so that what a writer sends and
/// closes is all read. The run opened it twice, and a writer that closed
/// between the two opens lost what it sent, the second open then waiting
/// for a writer that never came: a race the writer wins now and then, so
/// the test runs a hundred rounds (the double open hung at about the 70th
/// when tried; a round takes about 0.2 s).
#[test]
fn run_reads_a_named_pipe_whole() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let sample = fixtures().join("messages/sample.jsonl");
    for round in 0..100 {
        // The writer opens the pipe (waiting for the run), writes the
        // whole sample, and closes.
        let writer = Command::new("sh")
            .arg("-c")
            .arg(r#"cat "$1" > "$2""#)
            .arg("sh")
            .arg(&sample)
            .arg(&fifo)
            .spawn()
            .unwrap();
        let mut child = run_of(&fixtures().join("pipelines"), &fifo)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("round {round}: the run still waits on the pipe after a minute");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "round {round}: {stderr}");
        assert!(
            stderr.contains("5 in = 5 delivered"),
            "round {round}: {stderr}"
        );
        assert_eq!(text(&out.stdout).lines().count(), 5, "round {round}");
        let mut writer = writer;
        assert!(writer.wait().unwrap().success(), "round {round}");
    }
}

/// A message the shipped filter drops is counted as dropped, written
/// nowhere, and the module's row says it ran for it.
#[test]
fn run_counts_the_messages_a_filter_drops() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "pipeline_id: quiet\nstages: [{priority: 0, modules: [{module_id: field-filter, \
         instance_config: {custom_config: {field: type, drop: [heartbeat]}}}]}]\n",
    );
    let input = "{\"topic\":\"t\",\"key\":\"a\",\"payload\":{\"type\":\"heartbeat\"}}\n\
                 {\"topic\":\"t\",\"key\":\"b\",\"payload\":{\"type\":\"reading\"}}\n";
    let out = run_on_stdin(&config, &[], input);
    let (_, stderr) = exited(&out, 0);
    assert!(
        stderr.contains("2 in = 1 delivered + 1 dropped + 0 dead-lettered"),
        "{stderr}"
    );
    assert_eq!(keys(&text(&out.stdout)), ["b"]);
    let row = stderr.lines().find(|l| l.contains("field-filter")).unwrap();
    assert_eq!(
        row.split_whitespace().nth(3),
        Some("2"),
        "ran for both: {row}"
    );
}

/// The shipped router moves a message to another topic, and the pipeline
/// after it selects by the new topic (execution.md: "A module that changes
/// the topic changes what later filters see"), with the real modules.
#[test]
fn run_routes_messages_and_later_pipelines_select_by_the_new_topic() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "pipelines:\n\
         - pipeline_id: route\n\
         \x20 stages: [{priority: 0, modules: [{module_id: topic-router, instance_config: \
         {custom_config: {field: region, topics: {eu: events.eu}}}}]}]\n\
         - pipeline_id: eu-only\n\
         \x20 stages: [{priority: 0, modules: [{module_id: field-filter, topic_filters: \
         [{filter_type: Exact, pattern: events.eu}], instance_config: {custom_config: \
         {field: type, drop: [heartbeat]}}}]}]\n",
    );
    let line = |key: &str, region: &str, kind: &str| {
        format!(
            "{{\"topic\":\"in\",\"key\":\"{key}\",\"payload\":{{\"region\":\"{region}\",\"type\":\"{kind}\"}}}}\n"
        )
    };
    let input = [
        line("a", "eu", "heartbeat"),
        line("b", "us", "heartbeat"),
        line("c", "eu", "reading"),
    ]
    .concat();
    let out = run_on_stdin(&config, &[], &input);
    let (_, stderr) = exited(&out, 0);
    // a: routed, then dropped by the filter its new topic selects; b: not
    // routed, so not filtered; c: routed and kept.
    assert!(
        stderr.contains("3 in = 2 delivered + 1 dropped + 0 dead-lettered"),
        "{stderr}"
    );
    let delivered: Vec<(String, String)> = text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().to_owned(),
                v["topic"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        delivered,
        [
            ("b".to_owned(), "in".to_owned()),
            ("c".to_owned(), "events.eu".to_owned())
        ]
    );
}

/// `run` on design.md's examples: the delivered messages, field by field, in
/// input order, and the accounting line.
#[test]
fn run_transforms_the_sample_messages_with_the_real_modules() {
    let out = run_samples(&[]);
    let (_, stderr) = exited(&out, 0);
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
    let again = run_on_stdin(&fixtures().join("pipelines"), &[], &text(&out.stdout));
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

/// `run`'s table has a row per module listing: a stage that lists one module
/// twice (here with other settings) shows two rows, numbered in the stage's
/// order, each with its own calls.
#[test]
fn run_counts_each_listing_of_a_module_in_its_own_row() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "pipeline_id: twice
stages:
  - priority: 0
    modules:
      - module_id: identity
      - module_id: identity
        instance_config:
          execution_timeout_ms: 50
  - priority: 1
    modules:
      - module_id: identity
";
    let input = "{\"topic\":\"a.b\",\"payload\":\"x\"}\n{\"topic\":\"a.b\",\"payload\":\"y\"}\n";
    let out = run_on_stdin(&write_config(dir.path(), yaml), &[], input);
    let (_, stderr) = exited(&out, 0);
    // Module, then ran, skipped, failed: one row per listing.
    let rows: Vec<Vec<&str>> = stderr
        .lines()
        .filter(|l| l.starts_with("twice "))
        .map(|l| l.split_whitespace().take(6).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["twice", "0", "identity#1", "2", "0", "0"],
            ["twice", "0", "identity#2", "2", "0", "0"],
            ["twice", "1", "identity", "2", "0", "0"],
        ],
        "{stderr}"
    );
}

/// Dead letters go to their own file; bad lines are reported with their line
/// numbers, the others processed, and the run exits 1.
#[test]
fn run_writes_dead_letters_apart_and_reports_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "pipeline_id: p\nerror_handling: SendToDeadLetter\nstages: [{priority: 0, modules: [{module_id: hostile-trap, topic_filters: [{filter_type: Exact, pattern: trap}]}]}]\n";
    let dead = dir.path().join("dead.jsonl");
    let input = "{\"topic\":\"trap\",\"payload\":\"attack\"}\nnot json\n{\"topic\":\"ok\",\"payload\":\"fine\"}\n{\"topic\":\"t\"}\n";
    let out = run_on_stdin(
        &write_config(dir.path(), yaml),
        &["--dead-letter", dead.to_str().unwrap(), "--trace"],
        input,
    );
    let (_, stderr) = exited(&out, 1);
    assert!(
        stderr.contains("-:2: not valid JSON: expected ident"),
        "{stderr}"
    );
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
    // One trace for each message, in input order, by its input line (the bad
    // lines have none); a module not selected says why.
    let traces: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|t| t.get("line").is_some())
        .collect();
    let lines: Vec<&serde_json::Value> = traces.iter().map(|t| &t["line"]).collect();
    assert_eq!(lines, [1, 3], "{stderr}");
    assert_eq!(traces[1]["trace"][0]["skipped"], "not_selected");
    assert!(
        traces[1]["trace"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("trap")),
        "{}",
        traces[1]
    );
}

/// An output file that is the input, or the other output, is refused before
/// anything is opened for writing: nothing is emptied or overwritten.
#[test]
fn run_refuses_to_write_over_its_input_or_its_other_output() {
    let dir = tempfile::tempdir().unwrap();
    let config = fixtures().join("pipelines");
    let input = dir.path().join("in.jsonl");
    let lines = "{\"topic\":\"t\",\"payload\":\"p\"}\n";
    std::fs::write(&input, lines).unwrap();
    let modules = modules();
    let run_with = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--config",
            config.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--modules",
            &modules,
        ];
        args.extend(extra);
        let out = server::tool()
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (out.status.code(), text(&out.stderr))
    };
    // The input by another name, as --output or as --dead-letter.
    for flag in ["--output", "--dead-letter"] {
        let (code, stderr) = run_with(&[flag, "./in.jsonl"]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("{flag} ./in.jsonl is the input file")),
            "{stderr}"
        );
        assert_eq!(std::fs::read_to_string(&input).unwrap(), lines);
    }
    // One new file twice, by two names; then one existing file twice.
    for (output, dead) in [("out.jsonl", "./out.jsonl"), ("in2.jsonl", "in2.jsonl")] {
        std::fs::write(dir.path().join("in2.jsonl"), "kept\n").unwrap();
        let (code, stderr) = run_with(&["--output", output, "--dead-letter", dead]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("--output and --dead-letter are one file"),
            "{stderr}"
        );
        assert!(!dir.path().join("out.jsonl").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("in2.jsonl")).unwrap(),
            "kept\n"
        );
    }
    // Standard output twice is one stream, /dev/null twice destroys nothing:
    // allowed.
    for both in ["-", "/dev/null"] {
        let (code, stderr) = run_with(&["--output", both, "--dead-letter", both]);
        assert_eq!(code, Some(0), "{both}: {stderr}");
    }
    // Standard output and standard error one pipe (`2>&1 | …`): a pipe is
    // never one file, though its entries in /proc name no path (they were
    // taken for one file of a name that is nowhere).
    let run_input = [
        "run",
        "--config",
        config.to_str().unwrap(),
        "--modules",
        &modules,
        "--input",
        input.to_str().unwrap(),
    ];
    let tool = server::tool();
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"exec "$@" 2>&1"#)
        .arg("sh")
        .arg(tool.get_program())
        .args(run_input)
        .args(["--output", "/dev/stdout", "--dead-letter", "/dev/fd/2"])
        .output()
        .unwrap();
    let both = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{both}");
    assert!(both.contains("1 in = 1 delivered"), "{both}");
    // Standard output redirected to a file, and that file as --dead-letter:
    // one file, read through its open entry.
    let redirected = dir.path().join("redirected.jsonl");
    let out = server::tool()
        .args(run_input)
        .args(["--output", "-", "--dead-letter"])
        .arg(&redirected)
        .stdout(std::fs::File::create(&redirected).unwrap())
        .output()
        .unwrap();
    exited(&out, 1);
    assert!(
        text(&out.stderr).contains("are one file"),
        "{}",
        text(&out.stderr)
    );
    // A dangling link to the other output's file (writing through it would
    // create that file).
    std::os::unix::fs::symlink("out.jsonl", dir.path().join("link.jsonl")).unwrap();
    let (code, stderr) = run_with(&["--output", "out.jsonl", "--dead-letter", "link.jsonl"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("are one file"), "{stderr}");
    // Standard input redirected from the output file.
    let out = server::tool()
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--modules",
            &modules,
        ])
        .args(["--input", "-", "--output", "in.jsonl"])
        .current_dir(dir.path())
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--output in.jsonl is the input file"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&input).unwrap(), lines);
}

/// The outputs are emptied only once both are open: a dead-letter file
/// that cannot be opened costs the earlier run's results nothing. A resumed
/// run does not append to a file that ends mid-line (a run killed while
/// writing): it says so, and touches nothing.
#[test]
fn run_empties_its_outputs_only_once_both_are_open_and_appends_only_to_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), IDENTITY_PIPELINE);
    let out = dir.path().join("out.jsonl");
    let earlier = "{\"topic\":\"t\",\"payload\":\"earlier\"}\n";
    std::fs::write(&out, earlier).unwrap();
    let line = "{\"topic\":\"t\",\"payload\":\"p\"}\n";
    let with = |extra: &[&str]| {
        let mut args = vec!["--output", out.to_str().unwrap()];
        args.extend(extra);
        let result = run_on_stdin(&config, &args, line);
        (result.status.code(), text(&result.stderr))
    };
    // A directory cannot be opened as the dead-letter file.
    let (code, stderr) = with(&["--dead-letter", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot create"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), earlier);

    // Cut short mid-line, as by a kill: a resumed run refuses to append.
    let cut = format!("{earlier}{{\"topic\":\"t\",\"pay");
    std::fs::write(&out, &cut).unwrap();
    let (code, stderr) = with(&["--start-line", "2"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "does not end with a whole line: the run that wrote it was stopped while writing"
        ) && stderr.contains("cut short. Remove that last partial line"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), cut);
    // Whole lines: appended to (the input's second line, from line 2).
    std::fs::write(&out, earlier).unwrap();
    let second = "{\"topic\":\"t\",\"payload\":\"second\"}\n";
    let result = run_on_stdin(
        &config,
        &["--output", out.to_str().unwrap(), "--start-line", "2"],
        &format!("{line}{second}"),
    );
    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("{earlier}{second}")
    );
}

/// The circuit breaker and the dead-letter topic are the operator's to set
/// (`--breaker-failures`, `--breaker-cool-down-ms`, `--dead-letter-topic`);
/// messages meet the breaker in input order unless `--concurrent`; counts
/// that must be positive are refused at once (exit 2), and a directory as
/// the input before any output is touched.
#[test]
fn the_breaker_is_settable_and_impossible_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "pipeline_id: p\nerror_handling: SkipModule\nstages: [{priority: 0, modules: [{module_id: hostile-trap}]}]\n",
    );
    let input = "{\"topic\":\"t\",\"payload\":\"p\"}\n".repeat(10);
    // Every call traps: the first three open a breaker of 3 and the other
    // seven meet it open, in input order; a breaker of 100 never opens.
    for (failures, kinds) in [("3", "circuit_open 7, trap 3"), ("100", "trap 10")] {
        let out = run_on_stdin(&config, &["--breaker-failures", failures], &input);
        let (_, stderr) = exited(&out, 0);
        assert!(
            stderr.contains(kinds),
            "--breaker-failures {failures}: {stderr}"
        );
        assert!(stderr.contains("10 in = 10 delivered"), "{stderr}");
    }
    // Dead letters, on the topic given, in input order with their kinds.
    std::fs::create_dir(dir.path().join("dead")).unwrap();
    let dead = write_config(
        &dir.path().join("dead"),
        "pipeline_id: p\nerror_handling: SendToDeadLetter\nstages: [{priority: 0, modules: [{module_id: hostile-trap}]}]\n",
    );
    let out = run_on_stdin(
        &dead,
        &["--breaker-failures", "3", "--dead-letter-topic", "ops.dlq"],
        &input,
    );
    exited(&out, 0);
    let letters: Vec<(String, String)> = text(&out.stdout)
        .lines()
        .map(|line| {
            let letter: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                letter["topic"].as_str().unwrap().to_owned(),
                letter["headers"]["etl-dlq-error-kind"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    let mut expected = vec![("ops.dlq".to_owned(), "trap".to_owned()); 3];
    expected.extend(vec![("ops.dlq".to_owned(), "circuit_open".to_owned()); 7]);
    assert_eq!(letters, expected);
    // `--concurrent` runs them too, and accounts for every one.
    let out = run_on_stdin(
        &config,
        &["--breaker-failures", "3", "--concurrent"],
        &input,
    );
    let (_, stderr) = exited(&out, 0);
    assert!(stderr.contains("10 in = 10 delivered"), "{stderr}");
    assert!(stderr.contains("circuit_open"), "{stderr}");
    let refused = |args: &[&str]| {
        let out = run(args, None);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    };
    let config = config.to_str().unwrap();
    for [flag, value] in [["--breaker-failures", "0"], ["--dead-letter-topic", ""]] {
        refused(&["run", "--config", config, "--input", "-", flag, value]);
    }
    // What only a checkpoint's run does, asked of a run without one.
    for flag in ["--sync", "--resume-with-changes"] {
        refused(&["run", "--config", config, "--input", "-", flag]);
    }
    for flag in [
        "--max-batch",
        "--max-request-bytes",
        "--max-body-bytes-in-flight",
        "--max-connections",
        "--head-timeout-ms",
        "--body-timeout-ms",
        "--write-timeout-ms",
    ] {
        refused(&["serve", "--config", config, flag, "0"]);
    }
    // More connections than a process may open files (it panicked past
    // what tokio's semaphore holds, after it said it was serving).
    refused(&["serve", "--config", config, "--max-connections", "1048577"]);
    refused(&[
        "serve",
        "--config",
        config,
        "--max-connections",
        "18446744073709551615",
    ]);
    // A directory as the input: refused, the output left as it was.
    let output = dir.path().join("out.jsonl");
    std::fs::write(&output, "kept\n").unwrap();
    let out = run(
        &[
            "run",
            "--config",
            config,
            "--input",
            dir.path().to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is a directory"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "kept\n");
}

/// test-module shows every line a module logs, debug and info included, and
/// says how many more its start or a call logged past the limit of 32 (not
/// shown).
#[test]
fn test_module_shows_every_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("chatty.wasm");
    let wasm = wat::parse_str(
        r#"(module
          (import "rmq_etl" "log" (func $log (param i32 i32 i32)))
          (memory (export "memory") 2)
          (func (export "rmq_abi_version") (result i32) (i32.const 1))
          (func (export "rmq_alloc") (param i32) (result i32) (i32.const 1024))
          (func (export "rmq_init") (param i32 i32) (result i64)
            (local $n i32)
            ;; 35 lines as it starts: 3 past the limit.
            (loop $more
              (call $log (i32.const 1) (i32.const 80) (i32.const 9))
              (local.set $n (i32.add (local.get $n) (i32.const 1)))
              (br_if $more (i32.lt_u (local.get $n) (i32.const 35))))
            (i64.const 0))
          (func (export "rmq_transform") (param i32 i32) (result i64)
            (local $n i32)
            (call $log (i32.const 0) (i32.const 64) (i32.const 10))
            (call $log (i32.const 1) (i32.const 80) (i32.const 9))
            ;; 38 more: 40 in all, 8 past the limit.
            (loop $more
              (call $log (i32.const 1) (i32.const 80) (i32.const 9))
              (local.set $n (i32.add (local.get $n) (i32.const 1)))
              (br_if $more (i32.lt_u (local.get $n) (i32.const 38))))
            (i64.const 0x0000001000000001))
          (data (i32.const 16) "\00")
          (data (i32.const 64) "a debug li")
          (data (i32.const 80) "an info l"))"#,
    )
    .unwrap();
    std::fs::write(&module, wasm).unwrap();
    let out = run(
        &["test-module", module.to_str().unwrap(), "--input", "-"],
        Some("{\"topic\":\"t\",\"payload\":\"p\"}\n"),
    );
    let (_, stderr) = exited(&out, 0);
    for line in [
        "chatty: a debug li",
        "chatty: an info l",
        "-:1: 8 more log lines not shown: a call logs at most 32 lines",
        "chatty.wasm: 3 more log lines not shown: a start logs at most 32 lines",
    ] {
        assert!(stderr.contains(line), "{line:?} missing from:\n{stderr}");
    }
    // With RUST_LOG=warn, the info and debug lines are hidden, and hidden
    // lines count against no limit.
    let out = server::tool()
        .args(["test-module", module.to_str().unwrap(), "--input", "-"])
        .env("RUST_LOG", "warn")
        .stdin(
            std::fs::File::open(write_input(
                dir.path(),
                "{\"topic\":\"t\",\"payload\":\"p\"}\n",
            ))
            .unwrap(),
        )
        .output()
        .unwrap();
    let (_, stderr) = exited(&out, 0);
    for hidden in ["a debug li", "an info l", "more log lines not shown"] {
        assert!(!stderr.contains(hidden), "{hidden:?} in:\n{stderr}");
    }
    assert!(
        stderr.contains("1 message: 0 changed, 1 unchanged"),
        "{stderr}"
    );
}

/// `text` written to `DIR/input.jsonl`: its path.
fn write_input(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("input.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

/// A write that fails names the output it was for.
#[test]
fn a_failed_write_names_its_output() {
    let out = run_samples(&["--output", "/dev/full"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr
            .contains("stopped: writing delivered messages to /dev/full: No space left on device"),
        "{stderr}"
    );
}

/// `--start-line` past the input's end is said (a wrong file, or a run
/// resumed twice); line 0 is refused.
#[test]
fn run_says_when_start_line_skips_the_whole_input() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), IDENTITY_PIPELINE);
    let lines = "{\"topic\":\"t\",\"payload\":\"p\"}\n{\"topic\":\"t\",\"payload\":\"q\"}\n";
    // Line 3 of two: all was done before; nothing to say.
    for (start, note) in [
        ("3", None),
        ("5", Some("has 2 lines, all before --start-line 5")),
    ] {
        let out = run_on_stdin(&config, &["--start-line", start], lines);
        let (_, stderr) = exited(&out, 0);
        assert!(stderr.contains("0 in = 0 delivered"), "{stderr}");
        assert_eq!(stderr.contains("note:"), note.is_some(), "{stderr}");
        if let Some(note) = note {
            assert!(stderr.contains(note), "{stderr}");
        }
    }
    let out = run_on_stdin(&config, &["--start-line", "0"], lines);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("lines are numbered from 1"));
}

/// Modules that are not there are each named, with where they are looked
/// for; the run goes on (their calls fail `unavailable`).
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
    let (_, stderr) = exited(&out, 0);
    assert!(stderr.contains("sensor-data-validator.wasm"), "{stderr}");
    assert!(
        stderr.contains("7 modules could not be loaded from")
            && stderr.contains("--modules sets the directory"),
        "{stderr}"
    );
}

/// The README's `cargo run … rustmq-etl -- …` commands, run as written (with
/// this test's build of the binary) from the repository root: each succeeds.
/// `serve` is started on a free port instead of its default one, answers
/// `/health` and `/v1/process`, and stops with exit 0 on SIGTERM.
#[test]
fn the_readme_commands_work_as_written() {
    let root =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo")).join("../..");
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
        let out = server::tool()
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

fn module(name: &str) -> String {
    format!("{}/{name}.wasm", modules())
}

/// `test-module` of the shipped module `name` on `input` from standard
/// input, with `extra` arguments.
fn test_module(name: &str, extra: &[&str], input: &str) -> Output {
    let module = module(name);
    let mut args = vec!["test-module", module.as_str(), "--input", "-"];
    args.extend(extra);
    run(&args, Some(input))
}

/// Asserts that `out` exited with `code` (saying its standard error if
/// not), and gives its standard output and standard error as text.
#[track_caller]
fn exited(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    (stdout, stderr)
}

fn sample() -> String {
    fixtures()
        .join("messages/sample.jsonl")
        .to_string_lossy()
        .into_owned()
}

/// test-module shows, per message, what the module changed, field by field.
#[test]
fn test_module_shows_each_change() {
    let out = run(
        &[
            "test-module",
            &module("temperature-converter"),
            "--input",
            "-",
        ],
        Some(concat!(
            r#"{"topic":"iot.sensors.temperature","payload":{"unit":"celsius","reading":21.5}}"#,
            "\n",
            r#"{"topic":"iot.sensors.temperature","payload":{"unit":"fahrenheit","reading":70}}"#,
            "\n",
        )),
    );
    let (stdout, _) = exited(&out, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("-:1: changed ("), "{stdout}");
    assert_eq!(lines[1], "    payload    .reading: 21.5 → 70.7");
    assert_eq!(
        lines[2],
        r#"    payload    .unit: "celsius" → "fahrenheit""#
    );
    assert!(lines[3].starts_with("-:2: unchanged ("), "{stdout}");
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        text(&out.stderr).contains("2 messages: 1 changed, 1 unchanged, 0 dropped, 0 failed"),
        "{}",
        text(&out.stderr)
    );
}

/// test-module hands init the text a pipeline's module gets for the same
/// custom_config (written anew: keys sorted, compact, numbers as the engine
/// writes them), not the command line's text; here an init that refuses
/// whatever it gets, quoting it.
#[test]
fn test_module_hands_init_the_config_as_a_pipeline_does() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("quote.wasm");
    let wasm = wat::parse_str(
        r#"(module
          (memory (export "memory") 1)
          (func (export "rmq_abi_version") (result i32) (i32.const 1))
          (func (export "rmq_alloc") (param i32) (result i32) (i32.const 1024))
          (func (export "rmq_init") (param $p i32) (param $l i32) (result i64)
            (i64.or
              (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
              (i64.extend_i32_u (local.get $l))))
          (func (export "rmq_transform") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    std::fs::write(&module, wasm).unwrap();
    let out = run(
        &[
            "test-module",
            module.to_str().unwrap(),
            "--input",
            "-",
            "--module-config",
            r#"{ "b": 1e2, "a": [1, 2] }"#,
        ],
        Some(""),
    );
    let (_, stderr) = exited(&out, 1);
    assert!(
        stderr.contains(r#"init rejected its custom_config: {"a":[1,2],"b":100.0}"#),
        "{stderr}"
    );
    // An init refusing with an empty text still says something.
    let silent = dir.path().join("silent.wasm");
    std::fs::write(
        &silent,
        wat::parse_str(
            r#"(module
              (memory (export "memory") 1)
              (func (export "rmq_abi_version") (result i32) (i32.const 1))
              (func (export "rmq_alloc") (param i32) (result i32) (i32.const 1024))
              (func (export "rmq_init") (param i32 i32) (result i64) (i64.const 0x0000040000000000))
              (func (export "rmq_transform") (param i32 i32) (result i64) (i64.const 0)))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let out = run(
        &["test-module", silent.to_str().unwrap(), "--input", "-"],
        Some(""),
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("init rejected its custom_config: (its init gave no reason)"),
        "{stderr}"
    );
}

/// A module built without an init function (`export!(transform = …)`) says
/// that the custom_config it was given is ignored (it ran as if none had been
/// given, without a word); given none, it says nothing.
#[test]
fn test_module_warns_of_a_custom_config_a_module_without_init_ignores() {
    let identity = fixtures().join("modules/identity.wasm");
    let identity = identity.to_str().unwrap();
    let warning = "identity: its custom_config is ignored: the module has no init function";
    let out = run(
        &[
            "test-module",
            identity,
            "--input",
            "-",
            "--module-config",
            r#"{"threshold": 5}"#,
        ],
        Some(""),
    );
    let (_, stderr) = exited(&out, 0);
    assert!(stderr.contains(warning), "{stderr}");
    let out = run(&["test-module", identity, "--input", "-"], Some(""));
    let (_, stderr) = exited(&out, 0);
    assert!(!stderr.contains("custom_config is ignored"), "{stderr}");
}

/// --json: one line per message with the changes and the message as left.
#[test]
fn test_module_json_gives_changes_and_the_result() {
    let out = run(
        &[
            "test-module",
            &module("message-formatter"),
            "--input",
            "-",
            "--json",
            "--module-config",
            r#"{"pretty": true}"#,
        ],
        Some(r#"{"topic":"t","payload":{"b":1}}"#),
    );
    exited(&out, 0);
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["line"], 1);
    assert_eq!(line["result"], "changed");
    assert!(line["time_us"].is_u64());
    assert_eq!(
        line["changes"],
        serde_json::json!([
            {"field": "header_added", "name": "content-type", "value": "application/json"},
            {"field": "json_rewritten", "from_bytes": 7, "to_bytes": 12},
        ])
    );
    assert_eq!(line["message"]["payload"], "{\n  \"b\": 1\n}");
    assert_eq!(
        line["message"]["headers"]["content-type"],
        "application/json"
    );
}

/// --json as modules.md describes it: a failure has `error` with its kind
/// and no `message`; a change has `from` and `to`; a message kept as it was
/// has its `message` and no `error`.
#[test]
fn test_module_json_leaves_out_what_does_not_apply() {
    let json_lines = |name: &str, config: &str, input: &str| -> Vec<serde_json::Value> {
        let out = run(
            &[
                "test-module",
                &module(name),
                "--input",
                "-",
                "--json",
                "--module-config",
                config,
            ],
            Some(input),
        );
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let failed = &json_lines(
        "hostile-trap",
        "null",
        r#"{"topic":"t","payload":"attack"}"#,
    )[0];
    assert_eq!(failed["result"], "failed", "{failed}");
    assert_eq!(failed["error"]["kind"], "trap", "{failed}");
    assert!(failed["error"]["message"].is_string(), "{failed}");
    assert!(failed.get("message").is_none(), "{failed}");
    let changed = &json_lines(
        "temperature-converter",
        "null",
        r#"{"topic":"t","payload":{"unit":"celsius","reading":1}}
{"topic":"t","payload":{"unit":"kelvin"}}"#,
    );
    let reading = changed[0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == ".reading")
        .cloned()
        .unwrap_or_else(|| panic!("{}", changed[0]));
    assert_eq!(
        (reading["from"].clone(), reading["to"].clone()),
        (1.into(), 33.8.into())
    );
    assert_eq!(changed[1]["result"], "unchanged", "{}", changed[1]);
    assert!(changed[1].get("error").is_none(), "{}", changed[1]);
    assert!(changed[1]["message"].is_object(), "{}", changed[1]);
}

/// test-module runs the module within the limits it is given, as the
/// engine would: `--timeout-ms` stops a slow call, `--memory-limit-bytes`
/// below what the module needs to start refuses it, saying how much.
#[test]
fn test_module_applies_its_time_and_memory_limits() {
    // 100 billion rounds: far more than 200 ms. (The budget bounds the
    // instance's start too: 1 ms, tried first, failed the start under the
    // load of the whole test suite.)
    let out = test_module(
        "hostile-slow",
        &["--timeout-ms", "200"],
        r#"{"topic":"t","payload":"100000"}"#,
    );
    let (stdout, stderr) = exited(&out, 1);
    assert!(
        stdout.starts_with("-:1: failed (")
            && stdout.contains("timeout: ran past its time budget of 200 ms"),
        "{stdout}{stderr}"
    );
    let out = test_module(
        "identity",
        &["--memory-limit-bytes", "65536"],
        r#"{"topic":"t","payload":"1"}"#,
    );
    let (_, stderr) = exited(&out, 1);
    assert!(
        stderr.contains("cannot start within its memory limit: it needs 1114112 bytes")
            && stderr.contains("more than its memory limit of 65536 bytes"),
        "{stderr}"
    );
}

/// A dropped message: `dropped` in the text and the JSON (no `message`,
/// `error` or `changes`), counted as such, exit 0.
#[test]
fn test_module_reports_a_dropped_message() {
    let input = r#"{"topic":"t","payload":{"type":"heartbeat"}}"#;
    for json in [false, true] {
        let config = [
            "--module-config",
            r#"{"field":"type","drop":["heartbeat"]}"#,
        ];
        let extra = if json { &["--json"][..] } else { &[] };
        let out = test_module("field-filter", &[&config[..], extra].concat(), input);
        exited(&out, 0);
        assert!(
            text(&out.stderr).contains("1 message: 0 changed, 0 unchanged, 1 dropped, 0 failed"),
            "{}",
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        if json {
            let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            assert_eq!(line["result"], "dropped", "{line}");
            for absent in ["message", "error", "changes"] {
                assert!(line.get(absent).is_none(), "{line}");
            }
        } else {
            assert!(stdout.starts_with("-:1: dropped ("), "{stdout}");
        }
    }
}

/// A module whose init refuses no configuration is told it got `null`, and
/// how to give it one.
#[test]
fn test_module_says_how_to_give_a_custom_config() {
    let out = test_module("field-filter", &[], r#"{"topic":"t","payload":1}"#);
    exited(&out, 1);
    assert!(
        text(&out.stderr).contains(
            "init rejected its custom_config: none given (give {\"field\": \"type\", \
             \"drop\": [\"heartbeat\"]} or {\"field\": \"level\", \"keep\": [\"error\"]}) (its \
             init function got null: give its custom_config with --module-config)"
        ),
        "{}",
        text(&out.stderr)
    );
}

/// A failing module: each failure with its kind, and exit 1.
#[test]
fn test_module_reports_failures_and_exits_1() {
    let out = run(
        &["test-module", &module("hostile-trap"), "--input", &sample()],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    for line in stdout.lines() {
        assert!(line.contains(": failed ("), "{line}");
        assert!(line.contains("µs): trap: "), "{line}");
    }
    assert!(text(&out.stderr).contains("5 messages: 0 changed, 0 unchanged, 0 dropped, 5 failed"));
}

/// Bad flags, files, configuration and lines: what and where, exit 1.
#[test]
fn test_module_bad_input_says_what_and_where() {
    let formatter = module("message-formatter");
    let cases: &[(&[&str], &str)] = &[
        (
            &["test-module", "nowhere.wasm", "--input", "-"],
            "cannot read the module nowhere.wasm",
        ),
        (
            &[
                "test-module",
                &formatter,
                "--input",
                "-",
                "--module-config",
                "{pretty",
            ],
            "--module-config is not a custom_config (JSON, each key once in an object): {pretty",
        ),
        (
            &[
                "test-module",
                &formatter,
                "--input",
                "-",
                "--module-config",
                r#"{"pretty": true, "pretty": false}"#,
            ],
            "the key `pretty` is given twice in one object",
        ),
        (
            &[
                "test-module",
                &formatter,
                "--input",
                "-",
                "--module-config",
                r#"{"pretty": 7}"#,
            ],
            "the module does not start: unavailable: init rejected its custom_config: invalid type: integer `7`, expected a boolean (give {\"pretty\": true}) (its init function gets --module-config as its custom_config)",
        ),
        (
            &["test-module", &formatter, "--input", "missing.jsonl"],
            "cannot open missing.jsonl",
        ),
        (
            &[
                "test-module",
                &formatter,
                "--input",
                "-",
                "--timeout-ms",
                "18446744073709551615",
            ],
            "invalid value '18446744073709551615' for '--timeout-ms <MS>': must be from 1 to 3600000",
        ),
        (
            &[
                "test-module",
                &formatter,
                "--input",
                "-",
                "--memory-limit-bytes",
                "10",
            ],
            "invalid value '10' for '--memory-limit-bytes <BYTES>': must be from 65536",
        ),
    ];
    for (args, expected) in cases {
        let out = run(args, Some(""));
        // A value out of range is the parser's to refuse (exit 2), as a
        // malformed one; the rest fail the command (exit 1).
        let code = if expected.starts_with("invalid value") {
            2
        } else {
            1
        };
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let wat = std::env::temp_dir().join(format!("not-a-module-{}.wasm", std::process::id()));
    std::fs::write(&wat, b"\0asm\x01\0\0\0\x01").unwrap();
    let out = run(
        &["test-module", wat.to_str().unwrap(), "--input", "-"],
        Some(""),
    );
    std::fs::remove_file(&wat).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(wat.to_str().unwrap()),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        &["test-module", &formatter, "--input", "-"],
        Some("{\"topic\":\"t\",\"payload\":{}}\nnot json\n{\"topic\":\"t\",\"payload\":{}}\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("-:2: "), "{stderr}");
    // The bad line counted apart from the messages.
    assert!(
        stderr
            .contains("2 messages: 2 changed, 0 unchanged, 0 dropped, 0 failed; 1 bad input line"),
        "{stderr}"
    );
    assert_eq!(
        text(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-:"))
            .count(),
        2
    );
}

/// Whether rustup has the wasm32 target (building a new module needs it).
fn has_wasm32_target() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            text(&o.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-unknown-unknown")
        })
}

/// Runs a command line printed by the tool, as a user would paste it (the
/// tool's own name is this test's binary); cargo's build directory is the
/// crate's own, as in a plain shell.
fn run_printed(line: &str, dir: &Path) -> Output {
    let mut words = line.split_whitespace();
    let program = match words.next().unwrap() {
        "rustmq-etl" => env!("CARGO_BIN_EXE_rustmq-etl").to_owned(),
        other => other.to_owned(),
    };
    Command::new(program)
        .args(words)
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// new-module creates a crate whose tests pass, which builds with the printed
/// command, and whose module passes test-module on its sample messages.
#[test]
fn new_module_builds_and_passes_test_module_as_generated() {
    let dir = tempfile::tempdir().unwrap();
    let out = server::tool()
        .args(["new-module", "order-tagger", "--dir"])
        .arg(dir.path())
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let (stdout, _) = exited(&out, 0);
    let commands: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("    "))
        .map(str::trim)
        .collect();
    assert_eq!(commands.len(), 6, "{stdout}");
    assert!(commands[0].starts_with("cargo build --release --target wasm32-unknown-unknown"));
    let root = dir.path().join("order-tagger");
    for file in ["Cargo.toml", "src/lib.rs", "messages.jsonl", ".gitignore"] {
        assert!(root.join(file).is_file(), "{file} missing");
    }

    let tests = run_printed(commands[1], dir.path());
    assert!(tests.status.success(), "{}", text(&tests.stderr));
    assert!(
        text(&tests.stdout).contains("2 passed"),
        "{}",
        text(&tests.stdout)
    );

    if !has_wasm32_target() {
        eprintln!("the wasm32-unknown-unknown target is not installed: the module's WebAssembly build and test-module run were not tried");
        return;
    }
    let build = run_printed(commands[0], dir.path());
    assert!(build.status.success(), "{}", text(&build.stderr));
    let tried = run_printed(commands[2], dir.path());
    assert_eq!(tried.status.code(), Some(0), "{}", text(&tried.stderr));
    let shown = text(&tried.stdout);
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[0].contains("messages.jsonl:1: changed ("), "{shown}");
    assert_eq!(
        lines[1],
        r#"    header   + "x-processed-by": "order-tagger""#
    );
    assert!(shown.contains("messages.jsonl:3: dropped ("), "{shown}");
    assert!(text(&tried.stderr).contains("3 messages: 2 changed, 0 unchanged, 1 dropped, 0 failed"));
    // Into a pipeline by the printed commands, under its module id, in a
    // directory of the crate's own (no ./modules made where it was run).
    for command in &commands[3..5] {
        let done = run_printed(command, dir.path());
        assert!(done.status.success(), "{command}: {}", text(&done.stderr));
    }
    assert!(!dir.path().join("modules").exists());
    let config = write_config(
        dir.path(),
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: order-tagger}]}]\n",
    );
    let run_command = commands[5]
        .replace("YOUR_PIPELINES", config.to_str().unwrap())
        .replace(
            "YOUR_MESSAGES.jsonl",
            root.join("messages.jsonl").to_str().unwrap(),
        );
    let ran = run_printed(&run_command, dir.path());
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    assert!(
        text(&ran.stderr).contains("3 in = 2 delivered + 1 dropped + 0 dead-lettered"),
        "{}",
        text(&ran.stderr)
    );

    // The same name again, or a bad one: refused, nothing written.
    for (name, expected) in [
        ("order-tagger", "already exists"),
        ("Order Tagger", "is not a module name"),
    ] {
        let out = server::tool()
            .args(["new-module", name, "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains(expected),
            "{}",
            text(&out.stderr)
        );
    }
}

/// new-module's `--sdk` must name the SDK's crate: another crate, no crate,
/// or a path Cargo.toml cannot hold (not UTF-8) is refused with what to
/// give, and nothing is written. A symlink is written as given, so that the
/// crate follows it.
#[test]
fn new_module_names_the_sdk_as_given_and_refuses_what_is_not_one() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().unwrap();
    let cli = Path::new(env!("CARGO_MANIFEST_DIR"));
    let not_utf8 = dir.path().join(std::ffi::OsStr::from_bytes(b"sdk-\xff"));
    std::fs::create_dir(&not_utf8).unwrap();
    std::fs::write(
        not_utf8.join("Cargo.toml"),
        "[package]\nname = \"rustmq-etl-sdk\"\n",
    )
    .unwrap();
    let new_module = |sdk: &Path| {
        server::tool()
            .args(["new-module", "order-tagger", "--dir"])
            .arg(dir.path())
            .arg("--sdk")
            .arg(sdk)
            .output()
            .unwrap()
    };
    for (sdk, says) in [
        (cli.to_owned(), "the crate there is not rustmq-etl-sdk"),
        (
            dir.path().join("nowhere"),
            "no crate there (nothing was written)",
        ),
        (not_utf8, "is not UTF-8, which Cargo.toml cannot name"),
    ] {
        let out = new_module(&sdk);
        exited(&out, 1);
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
        assert!(!dir.path().join("order-tagger").exists());
    }
    let current = dir.path().join("current");
    std::os::unix::fs::symlink(cli.join("../sdk"), &current).unwrap();
    let out = new_module(&current);
    exited(&out, 0);
    let manifest = std::fs::read_to_string(dir.path().join("order-tagger/Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&format!(
            "rustmq-etl-sdk = {{ path = \"{}\" }}",
            current.display()
        )),
        "{manifest}"
    );
}

/// bench measures the fixtures' configuration and breaks the time down by
/// pipeline, stage and module.
#[test]
fn bench_reports_throughput_latency_and_the_breakdown() {
    // bench of `config` on the sample messages for 0.3 s, with `extra`.
    let bench = |config: &Path, extra: &[&str]| {
        let (config, input, modules) = (config.to_str().unwrap(), sample(), modules());
        let mut args = vec![
            "bench",
            "--config",
            config,
            "--input",
            &input,
            "--modules",
            &modules,
            "--seconds",
            "0.3",
        ];
        args.extend(extra);
        run(&args, None)
    };
    let config = fixtures().join("pipelines");
    let out = bench(&config, &[]);
    let (stdout, _) = exited(&out, 0);
    let throughput = stdout
        .lines()
        .find(|l| l.starts_with("throughput"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let rate: f64 = throughput
        .split_whitespace()
        .nth(1)
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(rate > 0.0, "{throughput}");
    for latency in ["one message  p50 ", "  its thread p50 "] {
        assert!(stdout.lines().any(|l| l.starts_with(latency)), "{stdout}");
    }
    for module in [
        "sensor-data-validator",
        "temperature-converter",
        "pressure-normalizer",
        "message-validator",
        "geolocation-enricher",
        "content-analyzer",
        "message-formatter",
    ] {
        assert!(
            stdout
                .lines()
                .filter(|l| l.contains(module) && l.ends_with('%'))
                .count()
                == 1,
            "{module} has no breakdown row:\n{stdout}"
        );
    }
    assert!(stdout.contains("iot-sensor-processing"), "{stdout}");
    assert!(stdout.lines().any(|l| l.contains("(stage)")), "{stdout}");
    // A pipeline's calls are its stages', and a stage's its modules'.
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("iot-sensor-processing") && l.ends_with('%'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let calls = |pick: &dyn Fn(&[&str]) -> bool| -> u64 {
        rows.iter()
            .filter(|r| pick(r))
            .map(|r| r[3].replace(',', "").parse::<u64>().unwrap())
            .sum()
    };
    let pipeline = calls(&|r| r[2] == "(pipeline)");
    assert!(pipeline > 0, "{stdout}");
    assert_eq!(pipeline, calls(&|r| r[2] == "(stage)"), "{stdout}");
    assert_eq!(pipeline, calls(&|r| !r[2].starts_with('(')), "{stdout}");
    assert!(
        stdout.contains("2000 in = 2000 delivered + 0 dropped + 0 dead-lettered"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("module failure"),
        "nothing failed:\n{stdout}"
    );
    // The callers and batch size asked for.
    let out = bench(&config, &["--callers", "3", "--batch", "7"]);
    let (stdout, _) = exited(&out, 0);
    let throughput = stdout
        .lines()
        .find(|l| l.starts_with("throughput"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        throughput.contains("; 3 callers, batches of 7)"),
        "{throughput}"
    );
    let sent: u64 = throughput
        .split('(')
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{throughput}"));
    assert_eq!(sent % 7, 0, "{throughput}");
    // No message to run: refused, not measured for ever.
    for input in ["", "not a message\n"] {
        let out = run(
            &[
                "bench",
                "--config",
                config.to_str().unwrap(),
                "--modules",
                &modules(),
                "--input",
                "-",
                "--seconds",
                "0.1",
            ],
            Some(input),
        );
        assert_eq!(out.status.code(), Some(1), "{input:?}");
        assert!(
            text(&out.stderr).contains("error: -: no messages to run"),
            "{}",
            text(&out.stderr)
        );
    }
    // A module that fails every call: the figure says what it measured.
    let dir = tempfile::tempdir().unwrap();
    let failing = write_config(
        dir.path(),
        "pipeline_id: p\nerror_handling: SkipModule\nstages: [{priority: 0, modules: [{module_id: hostile-trap}]}]\n",
    );
    let note = |extra: &[&str]| {
        let stdout = text(&bench(&failing, extra).stdout);
        let note = stdout.lines().find(|l| l.starts_with("note"));
        note.unwrap_or_else(|| panic!("no note:\n{stdout}"))
            .to_owned()
    };
    let opened = note(&[]);
    assert!(
        opened.contains("module failures in the 2000 traced messages")
            && opened.contains("refused by an open circuit breaker")
            && !opened.contains("(0 refused"),
        "{opened}"
    );
    // A breaker that never opens (bench takes the breaker flags too).
    let never = note(&["--breaker-failures", "4294967295"]);
    assert!(
        never.contains("(0 refused by an open circuit breaker"),
        "{never}"
    );

    let out = run(
        &[
            "bench",
            "--config",
            config.to_str().unwrap(),
            "--input",
            &sample(),
            "--seconds",
            "0",
        ],
        None,
    );
    // Out of range: refused by the parser, as a malformed value is (exit 2).
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr)
        .contains("invalid value '0' for '--seconds <SECONDS>': must be a positive number"));
    for (flag, value, says) in [
        (
            "--seconds",
            "1e300",
            "'--seconds <SECONDS>': must be a positive number",
        ),
        (
            "--seconds",
            "NaN",
            "'--seconds <SECONDS>': must be a positive number",
        ),
        (
            "--batch",
            "100000000000",
            "'--batch <COUNT>': must be from 1 to 65536",
        ),
        (
            "--callers",
            "0",
            "'--callers <COUNT>': must be from 1 to 1024",
        ),
    ] {
        let out = run(
            &[
                "bench",
                "--config",
                config.to_str().unwrap(),
                "--input",
                &sample(),
                flag,
                value,
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
}

/// `child`, a `run` of `total` messages through the slow pipeline, sent
/// `signal` midway (after 1.5 s): its output, and the last line its stop
/// message says it wrote.
fn stopped_midway(child: std::process::Child, signal: &str, total: usize) -> (Output, usize) {
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let done = resumes_after(&text(&out.stderr));
    assert!(
        done > 0 && done < total,
        "stopped at {done} of {total}: make the run slower"
    );
    (out, done)
}

/// The line `run`'s stop message says every line up to was processed and
/// written.
fn resumes_after(stderr: &str) -> usize {
    let at = stderr
        .find("every line up to line ")
        .unwrap_or_else(|| panic!("{stderr}"));
    stderr[at + "every line up to line ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `DIR/pipeline.yaml`: a pipeline that makes a dead letter of every message on
/// topic `bad` (`hostile-trap` traps) and delivers the others untouched.
fn bad_topic_dead_letters(dir: &Path) -> PathBuf {
    write_config(
        dir,
        "pipeline_id: p\nerror_handling: SendToDeadLetter\nstages: [{priority: 0, modules: \
         [{module_id: hostile-trap, topic_filters: [{filter_type: Exact, pattern: bad}]}]}]\n",
    )
}

/// A configuration of one pipeline of `hostile-slow`, which takes about a
/// millisecond for each of [`keyed_messages`]' messages: a run of a few
/// thousand lasts long enough to be stopped midway.
fn slow_pipeline(dir: &Path) -> PathBuf {
    write_config(
        dir,
        "pipeline_id: slow\nstages:\n  - priority: 0\n    modules:\n      - module_id: hostile-slow\n",
    )
}

/// `DIR/in.jsonl`: messages keyed `m1` to `m{total}`, on the topics `topic`
/// gives each number; its path and its text.
fn keyed_messages(
    dir: &Path,
    total: usize,
    topic: impl Fn(usize) -> &'static str,
) -> (PathBuf, String) {
    let input: String = (1..=total)
        .map(|i| {
            format!(
                "{{\"topic\":\"{}\",\"key\":\"m{i}\",\"payload\":\"1\"}}\n",
                topic(i)
            )
        })
        .collect();
    let messages = dir.join("in.jsonl");
    std::fs::write(&messages, &input).unwrap();
    (messages, input)
}

/// Appends `bytes` to the file at `path`.
fn append_to(path: &Path, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

/// The keys of the messages in a JSON Lines output, in order.
fn keys(output: &str) -> Vec<String> {
    output
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["key"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// A write that fails (the file-size limit here, as a full disk would) stops
/// `run` with the summary of what was written and where to resume; the file
/// is cut back to its last whole result, so that the resumed run appends the
/// rest: together, every message exactly once. An output that cannot be
/// written at all says so the same way.
#[test]
fn run_stopped_by_a_failed_write_says_where_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), IDENTITY_PIPELINE);
    let total = 3000;
    let (messages, _) = keyed_messages(dir.path(), total, |_| "t");
    let output = dir.path().join("out.jsonl");
    let run = |start: usize, limit: Option<&str>| {
        // The limit in 512- or 1024-byte blocks (as the shell counts), far
        // below the whole output; the tool catches the signal it raises, so
        // that the write fails instead.
        let limit = limit.map_or(String::new(), |l| format!("ulimit -f {l}; "));
        Command::new("sh")
            .arg("-c")
            .arg(format!("{limit}exec \"$@\""))
            .arg("sh")
            .arg(server::tool().get_program())
            .args(["run", "--config"])
            .arg(&config)
            .args(["--modules", &modules(), "--input"])
            .arg(&messages)
            .arg("--output")
            .arg(&output)
            .args(["--start-line", &start.to_string()])
            .output()
            .unwrap()
    };
    let out = run(1, Some("40"));
    let (_, stderr) = exited(&out, 1);
    assert!(
        stderr.contains(&format!(
            "stopped: writing delivered messages to {}: ",
            output.display()
        )),
        "{stderr}"
    );
    let done = resumes_after(&stderr);
    assert!(done > 0 && done < total, "stopped at {done}: {stderr}");
    assert!(
        stderr.contains(&format!(
            "{done} in = {done} delivered + 0 dropped + 0 dead-lettered"
        )),
        "the summary counts what was written: {stderr}"
    );
    assert!(
        stderr.contains(&format!("run again with --start-line {}", done + 1)),
        "{stderr}"
    );
    let written = std::fs::read_to_string(&output).unwrap();
    assert!(written.ends_with('\n'), "no half line left");
    assert_eq!(
        keys(&written).len(),
        done,
        "what it says it wrote is what it wrote"
    );

    let rest = run(done + 1, None);
    assert_eq!(rest.status.code(), Some(0), "{}", text(&rest.stderr));
    let expected: Vec<String> = (1..=total).map(|i| format!("m{i}")).collect();
    assert_eq!(
        keys(&std::fs::read_to_string(&output).unwrap()),
        expected,
        "every message exactly once, in order"
    );

    // Standard output appended to a file (`>>`) is cut back the same way,
    // and the resumed run, appending again, writes the rest once.
    let redirected = dir.path().join("stdout.jsonl");
    std::fs::write(&redirected, "{\"topic\":\"t\",\"key\":\"m0\"}\n").unwrap();
    let appending = |start: usize, limit: &str| {
        run_in_shell(
            &format!("{limit}exec \"$@\" >> \"$OUT\""),
            &config,
            &messages,
            start,
            &redirected,
        )
    };
    let out = appending(1, "ulimit -f 40; ");
    let (_, stderr) = exited(&out, 1);
    assert!(
        stderr.contains("stopped: writing delivered messages to standard output: ")
            && stderr.contains("append to it with >>"),
        "{stderr}"
    );
    let done = resumes_after(&stderr);
    let written = std::fs::read_to_string(&redirected).unwrap();
    assert!(written.ends_with('\n'), "no half line left");
    let expected: Vec<String> = (0..=done).map(|i| format!("m{i}")).collect();
    assert_eq!(
        keys(&written),
        expected,
        "what was there, then what it says it wrote"
    );
    let rest = appending(done + 1, "");
    assert_eq!(rest.status.code(), Some(0), "{}", text(&rest.stderr));
    let expected: Vec<String> = (0..=total).map(|i| format!("m{i}")).collect();
    assert_eq!(
        keys(&std::fs::read_to_string(&redirected).unwrap()),
        expected,
        "every message exactly once"
    );

    // A device that takes nothing.
    let out = run_of(&config, &messages)
        .args(["--output", "/dev/full"])
        .output()
        .unwrap();
    let (_, stderr) = exited(&out, 1);
    assert!(
        stderr.contains("stopped: writing delivered messages to /dev/full: ")
            && stderr.contains("0 in = 0 delivered + 0 dropped + 0 dead-lettered")
            && stderr.contains("no line of")
            && stderr.contains("run again with --start-line 1"),
        "{stderr}"
    );
}

/// Traces asked for and lost (standard error past its file's size limit)
/// fail the run, whose results were all written (it exited 0, the traces
/// cut short without a word).
#[test]
fn run_fails_when_its_traces_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), IDENTITY_PIPELINE);
    // About 40 KB of traces, 10 KB of results.
    let (messages, _) = keyed_messages(dir.path(), 200, |_| "t");
    let results = dir.path().join("results.jsonl");
    let traces = dir.path().join("traces.jsonl");
    let out = run_in_shell(
        &format!(
            "ulimit -f 20; exec \"$@\" --trace --output \"$OUT\" 2> '{}'",
            traces.display()
        ),
        &config,
        &messages,
        1,
        &results,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(std::fs::metadata(&traces).unwrap().len() <= 20 * 1024);
    // The results are smaller than the traces and fit: all written.
    assert_eq!(keys(&std::fs::read_to_string(&results).unwrap()).len(), 200);
}

/// `run` of `config` on `messages` from `start_line`, by `sh -c SCRIPT`
/// (which runs it as `"$@"`, with `$OUT` the path `out`): a size limit, a
/// redirection.
fn run_in_shell(
    script: &str,
    config: &Path,
    messages: &Path,
    start_line: usize,
    out: &Path,
) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(server::tool().get_program())
        .args(["run", "--config"])
        .arg(config)
        .args(["--modules", &modules(), "--input"])
        .arg(messages)
        .args(["--start-line", &start_line.to_string()])
        .env("OUT", out)
        .output()
        .unwrap()
}

/// Standard output and standard error both the file that fills (`> f 2>&1`):
/// the run does not panic writing to standard error; the stop line comes
/// first, into the room the cut made, after the whole results it counts.
#[test]
fn a_full_file_behind_both_outputs_still_gets_the_stop_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), IDENTITY_PIPELINE);
    let (messages, _) = keyed_messages(dir.path(), 3000, |_| "t");
    let both = dir.path().join("both.txt");
    let out = run_in_shell(
        "ulimit -f 40; exec \"$@\" > \"$OUT\" 2>&1",
        &config,
        &messages,
        1,
        &both,
    );
    let written = std::fs::read_to_string(&both).unwrap();
    assert_eq!(out.status.code(), Some(1), "{written}");
    let stop = written
        .find("stopped: writing delivered messages to standard output: ")
        .unwrap_or_else(|| panic!("no stop line: {written}"));
    let done = resumes_after(&written[stop..]);
    assert!(
        written[stop..].contains(&format!("run again with --start-line {}", done + 1)),
        "{written}"
    );
    let expected: Vec<String> = (1..=done).map(|i| format!("m{i}")).collect();
    // (Standard error's lines among them too: the artifact cache, cold,
    // cannot store its artifacts under the size limit, and warns.)
    let results: String = written[..stop]
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(keys(&results), expected, "whole results before it");
}

/// Dead letters sent to standard output with the delivered messages come in
/// input order among them, each on a line of its own; with `--concurrent`
/// too, whose batches run on the engine's threads.
#[test]
fn dead_letters_to_standard_output_keep_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = bad_topic_dead_letters(dir.path());
    let (messages, _) = keyed_messages(dir.path(), 600, |i| if i % 3 == 0 { "bad" } else { "t" });
    for extra in [None, Some("--concurrent")] {
        let mut args = vec![
            "run",
            "--config",
            config.to_str().unwrap(),
            "--input",
            messages.to_str().unwrap(),
            "--dead-letter",
            "-",
        ];
        let modules = modules();
        args.extend(["--modules", &modules]);
        args.extend(extra);
        let out = run(&args, None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{extra:?}: {}",
            text(&out.stderr)
        );
        let expected: Vec<String> = (1..=600).map(|i| format!("m{i}")).collect();
        assert_eq!(keys(&text(&out.stdout)), expected, "{extra:?}");
    }
}

/// With dead letters written apart, a batch is committed to both outputs or
/// to neither: the dead letters failing (here at once: `/dev/full`) after the
/// delivered messages of their batch were written out takes those back too,
/// so that the resumed run writes every message once.
#[test]
fn a_failed_write_to_one_output_takes_the_batch_back_from_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let config = bad_topic_dead_letters(dir.path());
    // One dead letter, in the fourth batch of 256.
    let total = 3000;
    let (messages, _) = keyed_messages(dir.path(), total, |i| if i == 1000 { "bad" } else { "t" });
    let (output, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let run = |start: usize, dead: &Path| {
        run_of(&config, &messages)
            .arg("--output")
            .arg(&output)
            .arg("--dead-letter")
            .arg(dead)
            .args(["--start-line", &start.to_string()])
            .output()
            .unwrap()
    };
    let out = run(1, Path::new("/dev/full"));
    let (_, stderr) = exited(&out, 1);
    assert!(
        stderr.contains("stopped: writing dead letters to /dev/full")
            && stderr.contains("every line up to line 768 of")
            && stderr.contains("768 in = 768 delivered + 0 dropped + 0 dead-lettered"),
        "{stderr}"
    );
    let read = |path: &Path| keys(&std::fs::read_to_string(path).unwrap());
    assert_eq!(read(&output).len(), 768, "the fourth batch taken back");
    let rest = run(769, &dead);
    assert_eq!(rest.status.code(), Some(0), "{}", text(&rest.stderr));
    let mut all = read(&output);
    all.extend(read(&dead));
    all.sort_by_key(|k| k[1..].parse::<usize>().unwrap());
    let expected: Vec<String> = (1..=total).map(|i| format!("m{i}")).collect();
    assert_eq!(all, expected, "every message exactly once");
}

/// A batch whose dead letters fail after its delivered messages went down a
/// pipe cannot be taken back from the pipe: `run` says so, and says from
/// which line to go on.
#[test]
fn a_failed_write_warns_that_a_pipe_cannot_be_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = bad_topic_dead_letters(dir.path());
    // One dead letter, in the fourth batch of 256.
    let (messages, _) = keyed_messages(dir.path(), 3000, |i| if i == 1000 { "bad" } else { "t" });
    let out = run_of(&config, &messages)
        .args(["--dead-letter", "/dev/full"])
        .output()
        .unwrap();
    let (_, stderr) = exited(&out, 1);
    assert!(
        stderr.contains(
            "warning: writing delivered messages to standard output: results after the line \
             named above may be out already (at most a batch of 256, the last perhaps in \
             part): they cannot be taken back"
        ),
        "{stderr}"
    );
    // Every line up to the batch of the dead letter was written; that
    // batch's delivered messages are out too: they went down the pipe
    // before its dead letter failed.
    let done = resumes_after(&stderr);
    assert!(done < 1000, "{stderr}");
    let out_keys = keys(&text(&out.stdout));
    // m1 to m{last}, but m1000.
    let last = out_keys.len() + 1;
    let expected: Vec<String> = (1..=last)
        .filter(|&i| i != 1000)
        .map(|i| format!("m{i}"))
        .collect();
    assert_eq!(out_keys, expected, "{stderr}");
    assert!(last >= 1000 && last <= done + 256, "{last}, {stderr}");
}

/// `run` stopped by SIGTERM mid-stream finishes what it read, writes it, says
/// up to which line, and exits 143; a rerun from the next line does the rest:
/// together, every message exactly once. With standard input left open and
/// silent, what was read is run and written, and SIGTERM still stops it.
#[test]
fn run_stopped_by_sigterm_says_where_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let config = slow_pipeline(dir.path());
    let total = 3000;
    let (messages, input) = keyed_messages(dir.path(), total, |_| "t");
    let output = dir.path().join("out.jsonl");
    let run = |start: usize, out: &Path| {
        run_of(&config, &messages)
            .arg("--output")
            .arg(out)
            .args(["--start-line", &start.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (out, done) = stopped_midway(run(1, &output), "TERM", total);
    let (_, stderr) = exited(&out, 143);
    assert!(
        stderr.contains(&format!("run again with --start-line {}", done + 1)),
        "{stderr}"
    );
    let first = keys(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(first.len(), done, "what it says it wrote is what it wrote");

    // The same command from the line it names appends the rest.
    let rest = run(done + 1, &output).wait_with_output().unwrap();
    assert_eq!(rest.status.code(), Some(0), "{}", text(&rest.stderr));
    let all = keys(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(all[..done], first[..]);
    let expected: Vec<String> = (1..=total).map(|i| format!("m{i}")).collect();
    assert_eq!(all, expected, "every message exactly once, in order");

    // Standard input open and silent: the lines read are run and written.
    let mut child = server::tool()
        .args(["run", "--config"])
        .arg(&config)
        .args(["--modules", &modules(), "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            input
                .lines()
                .take(5)
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .as_bytes(),
        )
        .unwrap();
    stdin.flush().unwrap();
    // The five results come out while the input stays open (a quiet input
    // has what it sent run within 100 ms): read before any signal.
    let stdout = child.stdout.take().unwrap();
    let (lines, results) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = lines.send(line.unwrap());
        }
    });
    let mut written = Vec::new();
    while written.len() < 5 {
        let line = results
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the lines read are run and written while the input stays open");
        written.push(line);
    }
    Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    reader.join().unwrap();
    written.extend(results.try_iter());
    let (_, stderr) = exited(&out, 143);
    assert!(stderr.contains("every line up to line 5 "), "{stderr}");
    assert_eq!(keys(&written.join("\n")), ["m1", "m2", "m3", "m4", "m5"]);
}

/// `run --config CONFIG --input MESSAGES --output OUTPUT --checkpoint
/// CHECKPOINT` with the shipped modules, its standard error piped.
fn checkpointed_run(config: &Path, messages: &Path, output: &Path, checkpoint: &Path) -> Command {
    let mut command = run_of(config, messages);
    command
        .arg("--output")
        .arg(output)
        .arg("--checkpoint")
        .arg(checkpoint)
        .stderr(Stdio::piped());
    command
}

/// A checkpoint that cannot be written (here: past the file-size limit,
/// `ulimit -f`, which the run's first record, in the file's second page of
/// 4 KiB, crosses) stops the run before it processes a line: exit 1, the
/// checkpoint and why named, no result written. The same command, once the
/// file can be written, runs every message once.
#[test]
fn a_checkpoint_that_cannot_be_written_stops_the_run_before_any_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), IDENTITY_PIPELINE);
    let (messages, _) = keyed_messages(dir.path(), 3, |_| "t");
    let (output, checkpoint) = (
        dir.path().join("out.jsonl"),
        dir.path().join("run.checkpoint"),
    );
    let args = |command: &mut Command| {
        command
            .args(["run", "--config"])
            .arg(&config)
            .args(["--modules", &modules(), "--input"])
            .arg(&messages)
            .arg("--output")
            .arg(&output)
            .arg("--checkpoint")
            .arg(&checkpoint)
            // An artifact cache of its own: the limit fails its stores too.
            .env("XDG_CACHE_HOME", dir.path().join("cache"));
    };
    // 4 blocks: 2 or 4 KiB as the shell counts, either way below the first
    // record's place. (The tool catches the SIGXFSZ the write raises, so
    // that the write fails, EFBIG, instead of the process.)
    let mut limited = Command::new("sh");
    limited
        .args(["-c", "ulimit -f 4; exec \"$@\"", "sh"])
        .arg(server::tool().get_program());
    args(&mut limited);
    let out = limited.output().unwrap();
    let (_, stderr) = exited(&out, 1);
    assert!(
        stderr.contains(&format!(
            "error: writing the checkpoint to {}: File too large",
            checkpoint.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "");
    let mut again = server::tool();
    args(&mut again);
    let out = again.output().unwrap();
    exited(&out, 0);
    assert_eq!(
        keys(&std::fs::read_to_string(&output).unwrap()),
        ["m1", "m2", "m3"]
    );
}

/// `run --checkpoint` killed with SIGKILL mid-run — no chance to say where
/// it stopped, a result perhaps cut short — resumes exactly with the same
/// command: every message once, in order. Once finished, the same command
/// says there is nothing left to do and touches nothing.
#[test]
fn run_with_a_checkpoint_resumes_exactly_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let config = slow_pipeline(dir.path());
    let total = 3000;
    let (messages, _) = keyed_messages(dir.path(), total, |_| "t");
    let output = dir.path().join("out.jsonl");
    let checkpoint = dir.path().join("run.checkpoint");
    let command = || checkpointed_run(&config, &messages, &output, &checkpoint);
    // The newest record of the checkpoint's two slots, and its line.
    let newest = || {
        let bytes = std::fs::read(&checkpoint).unwrap_or_default();
        bytes
            .chunks(4096)
            .filter_map(|slot| serde_json::from_slice::<serde_json::Value>(slot.trim_ascii()).ok())
            .max_by_key(|record| record["seq"].as_u64())
    };
    let line = || {
        newest()
            .and_then(|record| record["checkpoint"]["line"].as_u64())
            .unwrap_or(0) as usize
    };
    // The run killed flushes each record and the output to the disk first
    // (`--sync`); the runs after it, not told to, go on doing so.
    let mut child = command().arg("--sync").spawn().unwrap();
    // Killed once it has committed a few batches.
    let started = std::time::Instant::now();
    while line() < 512 {
        assert!(started.elapsed() < std::time::Duration::from_secs(120));
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = line();
    assert!(
        killed_at < total,
        "it finished before the kill: make the run slower"
    );
    // A result cut short past the last commit, as a kill mid-write leaves.
    append_to(&output, b"{\"topic\":\"t\",\"key\":\"m");

    let rest = command().output().unwrap();
    let stderr = text(&rest.stderr);
    assert_eq!(rest.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("written after the last checkpoint were cut off"),
        "{stderr}"
    );
    assert!(
        stderr.contains("note: the run began with --sync: it goes on flushing"),
        "{stderr}"
    );
    // Only the lines after the checkpoint's were run.
    let left = total - killed_at;
    assert!(
        stderr.contains(&format!("{left} in = {left} delivered")),
        "{stderr}"
    );
    let mut expected: Vec<String> = (1..=total).map(|i| format!("m{i}")).collect();
    let written = std::fs::read_to_string(&output).unwrap();
    assert_eq!(keys(&written), expected, "every message once, in order");
    // The resume's records say --sync too: a later resume goes on syncing.
    assert_eq!(newest().unwrap()["checkpoint"]["sync"], true);

    let again = command().output().unwrap();
    let stderr = text(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("says this run finished"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), written);
    // A configuration with errors stops even a finished run's command.
    std::fs::write(&config, "pipeline_id: slow\nstages: []\n").unwrap();
    let broken = command().output().unwrap();
    let stderr = text(&broken.stderr);
    assert_eq!(broken.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("invalid configuration"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), written);
    slow_pipeline(dir.path());
    // With another --start-line than the run began at: refused.
    let both = command().args(["--start-line", "2"]).output().unwrap();
    assert_eq!(both.status.code(), Some(1));
    assert!(text(&both.stderr).contains("--start-line 2 is not where the run"));
    // Lines added to the input since: the same command runs them.
    append_to(
        &messages,
        b"{\"topic\":\"t\",\"key\":\"m3001\",\"payload\":\"1\"}\n",
    );
    let grown = command().output().unwrap();
    let stderr = text(&grown.stderr);
    assert_eq!(grown.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("grew since the run"), "{stderr}");
    expected.push("m3001".to_owned());
    assert_eq!(keys(&std::fs::read_to_string(&output).unwrap()), expected);
}

/// A checkpoint resumes only with what its run ran with: other pipelines,
/// other module files or other options that change results are refused,
/// changing nothing, and named; `--resume-with-changes` goes on with the new
/// ones, the lines done keeping their results.
#[test]
fn run_refuses_to_resume_a_checkpoint_with_other_pipelines_modules_or_options() {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    let module = modules.join("legacy-uppercase.wasm");
    let shipped = fixtures().join("modules/legacy-uppercase.wasm");
    std::fs::copy(&shipped, &module).unwrap();
    let pipeline = |timeout: u32| {
        format!(
            "pipeline_id: shout\nglobal_timeout_ms: {timeout}\nstages: [{{priority: 0, \
             modules: [{{module_id: legacy-uppercase}}]}}]\n"
        )
    };
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(&config, pipeline(5000)).unwrap();
    let input = dir.path().join("in.jsonl");
    let line = |key: &str| format!("{{\"topic\":\"t\",\"key\":\"{key}\",\"payload\":\"quiet\"}}\n");
    std::fs::write(&input, line("a") + &line("b")).unwrap();
    let (output, checkpoint) = (dir.path().join("out.jsonl"), dir.path().join("cp"));
    let command = |extra: &[&str]| {
        server::tool()
            .args(["run", "--config"])
            .arg(&config)
            .arg("--modules")
            .arg(&modules)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .arg("--checkpoint")
            .arg(&checkpoint)
            .args(extra)
            .output()
            .unwrap()
    };
    let first = command(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    // Finished, its input as it was: nothing to do, whatever changed.
    std::fs::write(&config, pipeline(4000)).unwrap();
    let finished = command(&[]);
    let stderr = text(&finished.stderr);
    assert_eq!(finished.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("says this run finished"), "{stderr}");
    std::fs::write(&config, pipeline(5000)).unwrap();
    // A line added since: a resume would run it. And bytes past the
    // checkpoint, as a kill mid-write leaves them: a resume would cut them.
    std::fs::write(&input, line("a") + &line("b") + &line("c")).unwrap();
    append_to(&output, b"{\"topic\":\"t\",\"ke");
    let (written, recorded) = (
        std::fs::read(&output).unwrap(),
        std::fs::read(&checkpoint).unwrap(),
    );
    let refused = |extra: &[&str], named: &str| {
        let out = command(extra);
        let (_, stderr) = exited(&out, 1);
        assert!(
            stderr.contains("changed since the run of --checkpoint"),
            "{stderr}"
        );
        // What changed, and only that.
        let changed = format!("{}: {named}. Its lines up to 2", checkpoint.display());
        assert!(stderr.contains(&changed), "{changed}: {stderr}");
        assert!(stderr.contains("--resume-with-changes"), "{stderr}");
        assert_eq!(
            std::fs::read(&output).unwrap(),
            written,
            "nothing written or cut"
        );
        assert_eq!(
            std::fs::read(&checkpoint).unwrap(),
            recorded,
            "nor recorded"
        );
    };
    // Another pipeline.
    std::fs::write(&config, pipeline(4000)).unwrap();
    refused(&[], "the pipelines (--config)");
    // The same pipeline, its keys in another order: not a change.
    std::fs::write(
        &config,
        "stages: [{modules: [{module_id: legacy-uppercase}], priority: 0}]\nglobal_timeout_ms: 5000\npipeline_id: shout\n",
    )
    .unwrap();
    let options = "--dead-letter-topic, --breaker-failures or --breaker-cool-down-ms";
    refused(&["--breaker-failures", "9"], options);
    refused(&["--dead-letter-topic", "other"], options);
    refused(&["--breaker-cool-down-ms", "7"], options);
    // Another module under the same name.
    std::fs::copy(fixtures().join("modules/identity.wasm"), &module).unwrap();
    refused(&[], "the module files (--modules: legacy-uppercase.wasm)");
    // Told to go on: the new line runs on the new module, the others keep
    // their results.
    let resumed = command(&["--resume-with-changes"]);
    let stderr = text(&resumed.stderr);
    assert_eq!(resumed.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("going on with the new"), "{stderr}");
    assert!(
        stderr.contains("bytes written after the last checkpoint were cut off"),
        "{stderr}"
    );
    assert!(stderr.contains("1 in = 1 delivered"), "{stderr}");
    let payloads: Vec<String> = text(&std::fs::read(&output).unwrap())
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["payload"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(payloads, ["QUIET", "QUIET", "quiet"]);
    // The checkpoint now records the new: the same command finds nothing
    // changed, and nothing to do.
    let again = command(&[]);
    let stderr = text(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("says this run finished"), "{stderr}");
}

/// A finished run's checkpoint answers "nothing to do" only to the command
/// that ran: given another output file, or a dead-letter file the run did
/// not have, it is refused, and nothing is written where it was asked to be.
#[test]
fn a_finished_checkpoint_refuses_other_output_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixtures().join("messages/sample.jsonl");
    let (output, checkpoint) = (dir.path().join("out.jsonl"), dir.path().join("cp"));
    let command = |output: &Path, extra: &[&std::ffi::OsStr]| {
        server::tool()
            .args(["run", "--config"])
            .arg(fixtures().join("pipelines"))
            .arg("--modules")
            .arg(fixtures().join("modules"))
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(output)
            .arg("--checkpoint")
            .arg(&checkpoint)
            .args(extra)
            .output()
            .unwrap()
    };
    let first = command(&output, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let (written, recorded) = (
        std::fs::read(&output).unwrap(),
        std::fs::read(&checkpoint).unwrap(),
    );
    let other = dir.path().join("other.jsonl");
    let refused = command(&other, &[]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--output {} is not the file the run of --checkpoint",
            other.display()
        )),
        "{stderr}"
    );
    assert!(!other.exists(), "{stderr}");
    let dead_letters = dir.path().join("dlq.jsonl");
    let refused = command(
        &output,
        &["--dead-letter".as_ref(), dead_letters.as_os_str()],
    );
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("had no --dead-letter file"), "{stderr}");
    assert!(!dead_letters.exists(), "{stderr}");
    assert_eq!(std::fs::read(&output).unwrap(), written);
    assert_eq!(std::fs::read(&checkpoint).unwrap(), recorded);
    // The command that ran: nothing to do.
    let again = command(&output, &[]);
    let stderr = text(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("says this run finished"), "{stderr}");
    assert_eq!(std::fs::read(&output).unwrap(), written);
}

/// A checkpointed run that read a last line without its line end (a writer
/// mid-line, or a file without a final line end), resumed once the input
/// has grown: a line that was no message then runs whole now; one given
/// only its line end goes on after it; one that was a message and has grown
/// since is refused (its result, of the line as it was, is written).
#[test]
fn a_checkpoint_resumes_a_last_line_that_grew_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), IDENTITY_PIPELINE);
    let line = |key: &str| format!("{{\"topic\":\"t\",\"key\":\"{key}\",\"payload\":\"p\"}}");
    let keys = |path: &Path| -> Vec<String> {
        text(&std::fs::read(path).unwrap())
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let scenario = |name: &str, first: String, added: String| {
        let input = dir.path().join(format!("{name}.jsonl"));
        let output = dir.path().join(format!("{name}.out.jsonl"));
        let checkpoint = dir.path().join(format!("{name}.cp"));
        std::fs::write(&input, first).unwrap();
        let command = || {
            run_of(&config, &input)
                .arg("--output")
                .arg(&output)
                .arg("--checkpoint")
                .arg(&checkpoint)
                .output()
                .unwrap()
        };
        let before = command();
        append_to(&input, added.as_bytes());
        let after = command();
        (before, after, keys(&output))
    };
    // Cut mid-line: bad then (exit 1), whole now.
    let whole = line("c");
    let (before, after, written) = scenario(
        "cut",
        line("a") + "\n" + &line("b") + "\n" + &whole[..10],
        whole[10..].to_owned() + "\n" + &line("d") + "\n",
    );
    assert_eq!(before.status.code(), Some(1), "{}", text(&before.stderr));
    let stderr = text(&after.stderr);
    assert_eq!(after.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("line 3 of") && stderr.contains("runs now as it is"),
        "{stderr}"
    );
    assert!(stderr.contains("2 in = 2 delivered"), "{stderr}");
    assert_eq!(written, ["a", "b", "c", "d"]);
    // The same with the cut line the input's first (the resume starts at
    // line 1, before which there is none).
    let (before, after, written) = scenario(
        "first",
        whole[..10].to_owned(),
        whole[10..].to_owned() + "\n" + &line("d") + "\n",
    );
    assert_eq!(before.status.code(), Some(1), "{}", text(&before.stderr));
    let stderr = text(&after.stderr);
    assert_eq!(after.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("line 1 of"), "{stderr}");
    assert!(stderr.contains("2 in = 2 delivered"), "{stderr}");
    assert_eq!(written, ["c", "d"]);
    // A whole last line without its line end, given it (CRLF) and a line.
    let (before, after, written) = scenario(
        "whole",
        line("a") + "\n" + &line("b"),
        "\r\n".to_owned() + &line("c") + "\n",
    );
    assert_eq!(before.status.code(), Some(0), "{}", text(&before.stderr));
    let stderr = text(&after.stderr);
    assert_eq!(after.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("going on after line 2"), "{stderr}");
    assert_eq!(written, ["a", "b", "c"]);
    // Cut inside its payload, which goes on with more than 4,096 spaces:
    // still the same line, whole now.
    let (before, after, written) = scenario(
        "long",
        line("a") + "\n" + r#"{"topic":"t","key":"c","payload":"a"#,
        " ".repeat(5000) + "\"}\n",
    );
    assert_eq!(before.status.code(), Some(1), "{}", text(&before.stderr));
    let stderr = text(&after.stderr);
    assert_eq!(after.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("runs now as it is"), "{stderr}");
    assert_eq!(written, ["a", "c"]);
    // A whole last line given white space beyond ASCII's (a no-break
    // space), then its line end: the line read as it was.
    let (_, after, written) = scenario(
        "nbsp",
        line("a") + "\n" + &line("b"),
        "\u{a0}\n".to_owned() + &line("c") + "\n",
    );
    let stderr = text(&after.stderr);
    assert_eq!(after.status.code(), Some(0), "{stderr}");
    assert_eq!(written, ["a", "b", "c"]);
    // A message then, more of its line now: refused, nothing written.
    let (before, after, written) =
        scenario("grown", line("a") + "\n" + &line("b"), "x\n".to_owned());
    assert_eq!(before.status.code(), Some(0), "{}", text(&before.stderr));
    let stderr = text(&after.stderr);
    assert_eq!(after.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2 of --input") && stderr.contains("cannot resume exactly"),
        "{stderr}"
    );
    assert_eq!(written, ["a", "b"]);
    // A line too long to read (past 16 MiB) without its line end, grown:
    // too long still, so the resume goes on after it (a start inside it
    // would run the line before it again).
    let (before, after, written) = scenario(
        "too-long",
        line("a") + "\n" + &"z".repeat((16 << 20) + 10),
        "z\n".to_owned() + &line("d") + "\n",
    );
    assert_eq!(before.status.code(), Some(1), "{}", text(&before.stderr));
    let stderr = text(&after.stderr);
    assert_eq!(after.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("going on after line 2"), "{stderr}");
    assert_eq!(written, ["a", "d"]);
}

/// `--checkpoint` needs an input and outputs that are regular files: not
/// standard input or output, not a device.
#[test]
fn run_refuses_a_checkpoint_without_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = fixtures().join("pipelines");
    let sample = fixtures().join("messages/sample.jsonl");
    let sample = sample.to_str().unwrap();
    let checkpoint = dir.path().join("cp");
    // The refusal's text, the run having exited 1.
    let refused = |input: &str, outputs: &[&str]| {
        let out = server::tool()
            .current_dir(dir.path())
            .args(["run", "--config"])
            .arg(&config)
            .args(["--modules", &modules(), "--input", input])
            .args(outputs)
            .arg("--checkpoint")
            .arg(&checkpoint)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{input} {outputs:?}");
        text(&out.stderr)
    };
    for outputs in [
        &[][..],
        &["--output", "-"],
        &["--output", "out.jsonl", "--dead-letter", "-"],
        &["--output", "/dev/stdout"],
        &["--output", "/dev/null"],
    ] {
        let stderr = refused(sample, outputs);
        assert!(
            stderr.contains("--checkpoint needs --output FILE")
                || stderr.contains("is not to a regular file"),
            "{outputs:?}: {stderr}"
        );
    }
    // Standard input cannot be told whether it is sent again; nor can a
    // device or a pipe.
    let file = ["--output", "out.jsonl"];
    assert!(refused("-", &file).contains("--checkpoint needs --input FILE"));
    assert!(refused("/dev/null", &file).contains("needs --input to be a regular file"));
}

/// Every command that reads messages refuses a directory as `run` does (explain
/// said "Is a directory (os error 21)", test-module and bench the same).
#[test]
fn every_command_refuses_a_directory_of_messages_alike() {
    let pipelines = fixtures().join("pipelines");
    let modules = fixtures().join("modules");
    let dir = fixtures().join("messages");
    let (pipelines, modules, dir) = (
        pipelines.to_str().unwrap(),
        modules.to_str().unwrap(),
        dir.to_str().unwrap(),
    );
    let identity = format!("{modules}/identity.wasm");
    for args in [
        vec!["explain", "--config", pipelines, "--input", dir],
        vec!["test-module", &identity, "--input", dir],
        vec![
            "bench",
            "--config",
            pipelines,
            "--modules",
            modules,
            "--input",
            dir,
        ],
        vec![
            "run",
            "--config",
            pipelines,
            "--modules",
            modules,
            "--input",
            dir,
        ],
    ] {
        let out = run(&args, None);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "--input {dir} is a directory: give a file of JSON Lines (or - for standard input)"
            )),
            "{args:?}: {stderr}"
        );
    }
}

/// The output files are replaced as a run starts: a longer file left by an
/// earlier run keeps none of its tail. A configuration with errors stops the
/// run (exit 1) before anything is opened for writing: the outputs are as
/// they were.
#[test]
fn run_replaces_its_outputs_and_a_bad_configuration_touches_none() {
    let dir = tempfile::tempdir().unwrap();
    let config = bad_topic_dead_letters(dir.path());
    let (output, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let old =
        "{\"topic\":\"old\",\"key\":\"a-long-key-left-by-an-earlier-run\",\"payload\":\"x\"}\n"
            .repeat(3);
    std::fs::write(&output, &old).unwrap();
    std::fs::write(&dead, &old).unwrap();
    let input = "{\"topic\":\"bad\",\"key\":\"m1\",\"payload\":\"1\"}\n\
                 {\"topic\":\"t\",\"key\":\"m2\",\"payload\":\"1\"}\n";
    let out = run_on_stdin(
        &config,
        &[
            "--output",
            output.to_str().unwrap(),
            "--dead-letter",
            dead.to_str().unwrap(),
        ],
        input,
    );
    exited(&out, 0);
    assert_eq!(keys(&std::fs::read_to_string(&output).unwrap()), ["m2"]);
    assert_eq!(keys(&std::fs::read_to_string(&dead).unwrap()), ["m1"]);

    std::fs::write(&output, "kept\n").unwrap();
    let bad = write_config(dir.path(), "pipeline_id: p\nstages: []\n");
    let out = run_on_stdin(&bad, &["--output", output.to_str().unwrap()], input);
    let (_, stderr) = exited(&out, 1);
    assert!(stderr.contains("invalid configuration"), "{stderr}");
    assert_eq!(text(&out.stdout), "");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "kept\n");
}

/// Blank lines (and lines of spaces) are no messages and no bad lines.
#[test]
fn run_skips_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = bad_topic_dead_letters(dir.path());
    let out = run_on_stdin(
        &config,
        &[],
        "{\"topic\":\"t\",\"key\":\"m1\",\"payload\":\"1\"}\n\n   \n\
         {\"topic\":\"t\",\"key\":\"m2\",\"payload\":\"1\"}\n",
    );
    let (_, stderr) = exited(&out, 0);
    assert!(
        stderr.contains("2 in = 2 delivered + 0 dropped + 0 dead-lettered"),
        "{stderr}"
    );
    assert!(!stderr.contains("bad"), "{stderr}");
    assert_eq!(keys(&text(&out.stdout)), ["m1", "m2"]);
}

/// The summary's `retried` and `dead` columns count what happened: two
/// messages dead-lettered; one message retried twice.
#[test]
fn the_summary_counts_retries_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let row = |yaml: &str, input: &str| -> Vec<String> {
        let out = run_on_stdin(&write_config(dir.path(), yaml), &[], input);
        let (_, stderr) = exited(&out, 0);
        stderr
            .lines()
            .find(|l| l.starts_with("p "))
            .unwrap_or_else(|| panic!("no row for p in\n{stderr}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let trap = "{\"topic\":\"t\",\"payload\":\"attack\"}\n";
    // pipeline stage module ran skipped failed retried dead …
    let dead = row(
        "pipeline_id: p\nerror_handling: SendToDeadLetter\nstages: [{priority: 0, modules: [{module_id: hostile-trap}]}]\n",
        &trap.repeat(2),
    );
    assert_eq!(
        dead[2..8],
        ["hostile-trap", "0", "0", "2", "0", "2"],
        "{dead:?}"
    );
    let retried = row(
        "pipeline_id: p\nerror_handling: RetryWithBackoff\nmax_retries: 2\nstages: [{priority: 0, modules: [{module_id: hostile-trap}]}]\n",
        trap,
    );
    assert_eq!(
        retried[2..8],
        ["hostile-trap", "0", "0", "1", "2", "1"],
        "{retried:?}"
    );
}

/// Ctrl-C (SIGINT) stops `run` as SIGTERM does, with exit 130: what it read
/// is finished and written, and the stop line names the last line written.
#[test]
fn run_stopped_by_sigint_exits_130_and_says_where_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let config = slow_pipeline(dir.path());
    let total = 3000;
    let (messages, _) = keyed_messages(dir.path(), total, |_| "t");
    let output = dir.path().join("out.jsonl");
    let child = run_of(&config, &messages)
        .arg("--output")
        .arg(&output)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, done) = stopped_midway(child, "INT", total);
    let (_, stderr) = exited(&out, 130);
    assert!(stderr.contains("stopped by SIGINT"), "{stderr}");
    assert_eq!(keys(&std::fs::read_to_string(&output).unwrap()).len(), done);
}

/// A checkpointed run stopped by SIGTERM says to run the same command again
/// (its checkpoint says where), not to give a start line, and the same
/// command then writes the rest: every message once, in order.
#[test]
fn a_checkpointed_run_stopped_says_to_run_the_same_command_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = slow_pipeline(dir.path());
    let total = 3000;
    let (messages, _) = keyed_messages(dir.path(), total, |_| "t");
    let output = dir.path().join("out.jsonl");
    let checkpoint = dir.path().join("run.checkpoint");
    let command = || checkpointed_run(&config, &messages, &output, &checkpoint);
    let (out, _) = stopped_midway(command().spawn().unwrap(), "TERM", total);
    let (_, stderr) = exited(&out, 143);
    assert!(stderr.contains("run the same command again"), "{stderr}");
    assert!(!stderr.contains("--start-line"), "{stderr}");
    let rest = command().output().unwrap();
    assert_eq!(rest.status.code(), Some(0), "{}", text(&rest.stderr));
    let expected: Vec<String> = (1..=total).map(|i| format!("m{i}")).collect();
    assert_eq!(keys(&std::fs::read_to_string(&output).unwrap()), expected);
}

/// With standard error a terminal, `run` draws its progress bar there, and
/// standard output, redirected to a file, holds the results alone: the same
/// bytes as a run without a terminal. (`script` gives the run a terminal.)
#[test]
fn the_progress_bar_stays_off_standard_output() {
    let script_works = Command::new("script")
        .args(["-q", "-e", "-c", "true", "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success());
    if !script_works {
        eprintln!(
            "util-linux's `script` cannot give a terminal here: the progress bar was not tried"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = slow_pipeline(dir.path());
    let (messages, _) = keyed_messages(dir.path(), 400, |_| "t");
    let args = [
        "run",
        "--config",
        config.to_str().unwrap(),
        "--modules",
        &modules(),
        "--input",
        messages.to_str().unwrap(),
    ];
    let out = server::tool().args(args).output().unwrap();
    exited(&out, 0);
    let plain = text(&out.stdout);
    // Through a terminal, standard output redirected to a file.
    let redirected = dir.path().join("results.jsonl");
    let quote = |a: &str| format!("'{}'", a.replace('\'', "'\\''"));
    let line = std::iter::once(env!("CARGO_BIN_EXE_rustmq-etl"))
        .chain(args)
        .map(quote)
        .chain([">".to_owned(), quote(redirected.to_str().unwrap())])
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("XDG_CACHE_HOME", server::cache_home())
        .env("TERM", "xterm")
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{terminal}");
    // The bar was drawn on the terminal, and the summary written there.
    assert!(
        terminal.contains("B/") && terminal.contains(" KiB"),
        "{terminal}"
    );
    assert!(terminal.contains("400 in = 400 delivered"), "{terminal}");
    let results = std::fs::read_to_string(&redirected).unwrap();
    assert_eq!(keys(&results).len(), 400);
    assert_eq!(results, plain);
}

/// A second signal while `run` honours a first (here waiting for a call of
/// a minute to end) ends the process at once, with 128 + the signal: nothing
/// more is written.
#[test]
fn a_second_signal_ends_a_run_s_stop_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "pipeline_id: slow\nglobal_timeout_ms: 120000\nstages:\n  - priority: 0\n    modules:\n      - module_id: hostile-slow\n        instance_config: {execution_timeout_ms: 60000}\n",
    );
    // Thousands of million rounds: far longer than the test.
    let messages = dir.path().join("in.jsonl");
    std::fs::write(&messages, "{\"topic\":\"t\",\"payload\":\"50000\"}\n").unwrap();
    let output = dir.path().join("out.jsonl");
    let mut child = run_of(&config, &messages)
        .arg("--output")
        .arg(&output)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let signal = |name: &str, child: &std::process::Child| {
        let sent = Command::new("kill")
            .args(["-s", name, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    // The output is opened once the signals are handled; the one line is
    // then read and called at once.
    let waited = std::time::Instant::now();
    while !output.exists() {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "no output"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    signal("TERM", &child);
    // The first waits for the call under way.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first signal ended the run"
    );
    signal("INT", &child);
    let waited = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if waited.elapsed() > std::time::Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("the second signal did not end the run");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let (_, stderr) = exited(&out, 130);
    assert!(!stderr.contains("every line up to"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "");
}

/// `--start-line` past the input's last line but one says that nothing was
/// processed; right after the last line (where a finished run resumes) it
/// says nothing of the kind.
#[test]
fn a_start_line_past_the_input_is_noted() {
    let dir = tempfile::tempdir().unwrap();
    let config = bad_topic_dead_letters(dir.path());
    let (messages, _) = keyed_messages(dir.path(), 2, |_| "t");
    let with_start = |start: &str| {
        let out = run(
            &[
                "run",
                "--config",
                config.to_str().unwrap(),
                "--modules",
                &modules(),
                "--input",
                messages.to_str().unwrap(),
                "--start-line",
                start,
            ],
            None,
        );
        exited(&out, 0);
        assert_eq!(text(&out.stdout), "");
        text(&out.stderr)
    };
    assert!(!with_start("3").contains("note:"), "{}", with_start("3"));
    let past = with_start("4");
    assert!(
        past.contains("has 2 lines, all before --start-line 4: nothing was processed"),
        "{past}"
    );
}

/// Results written to a pipe whose reader went away cannot be taken back:
/// the run stops (exit 1) and says so, rather than claiming a clean stop.
#[test]
fn a_closed_output_pipe_stops_the_run_and_says_results_cannot_be_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = bad_topic_dead_letters(dir.path());
    let (messages, _) = keyed_messages(dir.path(), 3000, |_| "t");
    let mut child = run_of(&config, &messages)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let (_, stderr) = exited(&out, 1);
    assert!(stderr.contains("cannot be taken back"), "{stderr}");
}
