//! `cargo xtask load [SECONDS]`: `rustmq-etl serve` on loopback under load
//! from another process (`wrk`), with valid and invalid configuration
//! reloads and module swaps every half second in the middle. Fails if any
//! request failed or timed out, or if a reload did not do what it should;
//! prints wrk's requests/s and latency distribution and the reloads seen.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::{cargo, root};

/// What wrk sends: an IoT reading for design.md's first pipeline.
const SCRIPT: &str = r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"topic":"iot.sensors.temperature","key":"s-1","payload":{"sensor_id":"s-1","sensor_type":"temperature","value":21.5,"unit":"celsius"}}'
"#;

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let seconds: u64 = match args.first() {
        Some(s) => s
            .parse()
            .map_err(|_| format!("`cargo xtask load SECONDS`: {s:?} is not a number"))?,
        None => 30,
    };
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err("wrk is not installed (Debian: apt-get install wrk)".into());
    }
    cargo(&["build", "--release", "-p", "rustmq-etl"])?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let binary = target.join("release/rustmq-etl");

    let dir = std::env::temp_dir().join(format!("rustmq-etl-load-{}", std::process::id()));
    let (config, modules) = (dir.join("config"), dir.join("modules"));
    copy_dir(&root().join("fixtures/pipelines"), &config)?;
    copy_dir(&root().join("fixtures/modules"), &modules)?;
    let script = dir.join("post.lua");
    std::fs::write(&script, SCRIPT).map_err(|e| e.to_string())?;

    let mut server = Command::new(&binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--modules")
        .arg(&modules)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stderr = server.stderr.take().ok_or("no server log")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let address = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| format!("the server did not start:\n{}", log.join("\n")))?;
        log.push(line.clone());
        if let Some(at) = line.find(" on http://") {
            break line[at + " on ".len()..].trim().to_owned();
        }
    };
    eprintln!("server at {address}; wrk for {seconds} s with reloads every 500 ms");

    let done = AtomicBool::new(false);
    let (wrk, steps) = std::thread::scope(|scope| {
        let reloader = scope.spawn(|| reload_loop(&config, &modules, &done));
        let wrk = Command::new("wrk")
            .args(["-t2", "-c16", "--latency", "--timeout", "2s"])
            .arg(format!("-d{seconds}s"))
            .arg("-s")
            .arg(&script)
            .arg(format!("{address}/v1/process"))
            .output();
        done.store(true, Ordering::Relaxed);
        (wrk, reloader.join())
    });
    let steps = steps.map_err(|_| "the reloader panicked")??;
    let wrk = wrk.map_err(|e| format!("cannot run wrk: {e}"))?;
    let report = String::from_utf8_lossy(&wrk.stdout).into_owned();
    println!("{report}");

    // Give the last reload its time, then stop the server and read its log.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args(["-s", "TERM", &server.id().to_string()])
        .status();
    let status = server.wait().map_err(|e| e.to_string())?;
    log.extend(lines.try_iter());
    let applied = log.iter().filter(|l| l.contains("in service (")).count();
    let rejected = log
        .iter()
        .filter(|l| l.contains(") rejected: configuration version"))
        .count();
    println!("reload steps: {steps}; the server applied {applied} and rejected {rejected}");
    let _ = std::fs::remove_dir_all(&dir);

    let mut failures = Vec::new();
    if !status.success() {
        failures.push(format!("the server exited with {status}"));
    }
    for bad in ["Non-2xx or 3xx responses", "Socket errors"] {
        if let Some(line) = report.lines().find(|l| l.contains(bad)) {
            failures.push(line.trim().to_owned());
        }
    }
    if applied == 0 || rejected == 0 {
        failures.push("the reloads did not all happen".into());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Every 500 ms, in turn: a valid change to the configuration, a broken file
/// added to it (to be refused), the broken file removed, a module swapped for
/// new bytes. Returns how many steps it took.
fn reload_loop(config: &Path, modules: &Path, done: &AtomicBool) -> Result<usize, String> {
    let pipeline = config.join("iot-sensor-processing.json");
    let original = std::fs::read_to_string(&pipeline).map_err(|e| e.to_string())?;
    let formatter = modules.join("message-formatter.wasm");
    let module = std::fs::read(&formatter).map_err(|e| e.to_string())?;
    let write = |path: &Path, bytes: &[u8]| -> Result<(), String> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| e.to_string())
    };
    let mut step = 0;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        match step % 4 {
            0 => {
                let timeout = if step % 8 == 0 { "2500" } else { "3000" };
                let changed = original.replace(
                    "\"global_timeout_ms\": 3000",
                    &format!("\"global_timeout_ms\": {timeout}"),
                );
                write(&pipeline, changed.as_bytes())?;
            }
            1 => write(&config.join("zz-broken.yaml"), b"pipeline_id: [")?,
            2 => std::fs::remove_file(config.join("zz-broken.yaml")).map_err(|e| e.to_string())?,
            _ => {
                // A custom section: the same module, other bytes, a new version.
                let mut bytes = module.clone();
                bytes.extend_from_slice(&[
                    0,
                    6,
                    5,
                    b'l',
                    b'o',
                    b'a',
                    b'd',
                    b'a' + (step % 26) as u8,
                ]);
                write(&formatter, &bytes)?;
            }
        }
        step += 1;
    }
    Ok(step)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(from).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        std::fs::copy(entry.path(), to.join(entry.file_name())).map_err(|e| e.to_string())?;
    }
    Ok(())
}
