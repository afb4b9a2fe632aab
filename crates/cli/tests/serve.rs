//! `rustmq-etl serve`: the real binary on a loopback port, driven with real
//! HTTP requests.

mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server::{copy_dir, fixtures, Server};

/// docs/serve.md, run: every request in an ```http block is sent in order to
/// a server started as the page says, and the answer is compared with the
/// documented one (JSON as values, times ignored; text line by line). A
/// ```yaml file=NAME block is written into the configuration directory.
#[test]
fn the_documented_examples_answer_as_documented() {
    let doc_path = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../../docs/serve.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipelines");
    copy_dir(&fixtures().join("pipelines"), &config);
    let modules = fixtures().join("modules");
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--modules",
        modules.to_str().unwrap(),
        "--max-batch",
        "3",
        "--no-watch",
    ]);
    // A request: its method, path, headers and body.
    type Request = (String, String, Vec<(String, String)>, String);
    let mut request: Option<Request> = None;
    let mut checked = 0;
    let mut lines = doc.lines().enumerate();
    while let Some((at, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let block: Vec<&str> = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| !l.starts_with("```"))
            .collect();
        if let Some(name) = info.strip_prefix("yaml file=") {
            std::fs::write(config.join(name), block.join("\n")).unwrap();
            continue;
        }
        if info != "http" {
            continue;
        }
        let first = block[0];
        let blank = block
            .iter()
            .position(|l| l.is_empty())
            .unwrap_or(block.len());
        // The headers between the first line and the blank one.
        let headers: Vec<(String, String)> = block[1..blank]
            .iter()
            .map(|l| {
                let (name, value) = l
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("docs/serve.md:{}: not a header: {l:?}", at + 1));
                (name.to_ascii_lowercase(), value.to_owned())
            })
            .collect();
        let body = block
            .get(blank + 1..)
            .unwrap_or(&[])
            .join("\n")
            .replace("<the --config path>", config.to_str().unwrap())
            .replace("<the --modules path>", modules.to_str().unwrap());
        if let Some(status) = first.strip_prefix("HTTP/1.1 ") {
            let (method, path, sent_headers, sent) = request.take().unwrap_or_else(|| {
                panic!("docs/serve.md:{}: a response without a request", at + 1)
            });
            let (code, answered, text) = server.exchange(&method, &path, &sent_headers, &sent);
            let expected: u16 = status[..3].parse().unwrap();
            assert_eq!(
                code,
                expected,
                "docs/serve.md:{}: {method} {path} answered {code}: {text}",
                at + 1
            );
            // Each header documented is in the answer, with that value.
            for (name, value) in &headers {
                assert!(
                    answered.iter().any(|(n, v)| n == name && v == value),
                    "docs/serve.md:{}: {method} {path}: no header {name}: {value} in {answered:?}",
                    at + 1
                );
            }
            match serde_json::from_str::<Value>(&body) {
                Ok(documented) => {
                    let actual: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                        panic!("docs/serve.md:{}: not JSON ({e}): {text}", at + 1)
                    });
                    if let Err(at_path) = same(&documented, &actual, "") {
                        panic!(
                            "docs/serve.md:{}: {method} {path}: the answer differs at {at_path}:\n{}",
                            at + 1,
                            serde_json::to_string_pretty(&actual).unwrap()
                        );
                    }
                }
                Err(_) => {
                    for line in body.lines().filter(|l| *l != "...") {
                        assert!(
                            text.lines().any(|a| a == line),
                            "docs/serve.md:{}: {method} {path}: no line {line:?} in\n{text}",
                            at + 1
                        );
                    }
                }
            }
            checked += 1;
        } else {
            let (method, path) = first.split_once(' ').unwrap();
            request = Some((method.to_owned(), path.to_owned(), headers, body));
        }
    }
    assert!(
        checked >= 10,
        "only {checked} examples found in docs/serve.md"
    );
    assert!(server.stop().success());
}

/// `documented` and `actual` are equal JSON, except that times (`time_us`,
/// `at_unix_ms`) only need to be numbers in both. `Err` says where they
/// differ.
fn same(documented: &Value, actual: &Value, path: &str) -> Result<(), String> {
    match (documented, actual) {
        (Value::Object(d), Value::Object(a)) => {
            let keys: std::collections::BTreeSet<_> = d.keys().chain(a.keys()).collect();
            for key in keys {
                let at = format!("{path}.{key}");
                match (d.get(key), a.get(key)) {
                    (Some(d), Some(a)) if matches!(key.as_str(), "time_us" | "at_unix_ms") => {
                        if !(d.is_u64() && a.is_u64()) {
                            return Err(at);
                        }
                    }
                    (Some(d), Some(a)) => same(d, a, &at)?,
                    _ => return Err(at),
                }
            }
            Ok(())
        }
        (Value::Array(d), Value::Array(a)) => {
            if d.len() != a.len() {
                return Err(format!("{path} (length)"));
            }
            for (i, (d, a)) in d.iter().zip(a).enumerate() {
                same(d, a, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (d, a) if d == a => Ok(()),
        _ => Err(path.to_owned()),
    }
}

/// A processing answer's message, order of modules run, and configuration
/// version.
fn ran(result: &Value) -> (Value, Vec<String>, u64) {
    let order = result["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("ran").is_some())
        .map(|e| e["module"].as_str().unwrap().to_owned())
        .collect();
    (
        result["message"].clone(),
        order,
        result["config_version"].as_u64().unwrap(),
    )
}

/// Replaces `path`'s contents at once (a new file renamed onto it), as an
/// operator's deployment would: a watcher never reads half a file.
fn replace(path: &Path, contents: impl AsRef<[u8]>) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, contents).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

fn two_stages(first: &str, second: &str) -> String {
    format!(
        "pipeline_id: p\nstages:\n  - {{priority: 0, modules: [{{module_id: {first}}}]}}\n  - {{priority: 1, modules: [{{module_id: {second}}}]}}\n"
    )
}

/// While clients send requests, the configuration file is rewritten (valid,
/// then broken), and a module file is replaced: no request fails, every
/// message comes back, and every answer is one whole configuration's.
#[test]
fn reloads_while_requests_flow_lose_nothing_and_never_mix_configurations() {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    for m in ["message-formatter", "content-analyzer", "identity"] {
        std::fs::copy(
            fixtures().join(format!("modules/{m}.wasm")),
            modules.join(format!("{m}.wasm")),
        )
        .unwrap();
    }
    // `stamp` is a module file swapped while messages flow: identity first,
    // then legacy-uppercase.
    std::fs::copy(
        fixtures().join("modules/identity.wasm"),
        modules.join("stamp.wasm"),
    )
    .unwrap();
    let config = dir.path().join("etl.yaml");
    let with_stamp = |a: &str, b: &str| {
        format!(
            "{}  - {{priority: 2, modules: [{{module_id: stamp}}]}}\n",
            two_stages(a, b)
        )
    };
    std::fs::write(&config, with_stamp("message-formatter", "content-analyzer")).unwrap();
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--modules",
        modules.to_str().unwrap(),
    ]);
    let stop = AtomicBool::new(false);
    /// Stops the clients however the scope ends (a failed assertion too).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let _stop_clients = StopOnDrop(&stop);
        let clients: Vec<_> = (0..3)
            .map(|client| {
                let (server, stop) = (&server, &stop);
                scope.spawn(move || {
                    let mut answers = Vec::new();
                    let mut sent = 0;
                    while (!stop.load(Ordering::Relaxed) || sent < 20) && sent < 5_000 {
                        let batch: Vec<Value> = (0..4)
                            .map(|i| json!({"topic": "t", "key": format!("{client}-{sent}-{i}"), "payload": "{ \"text\" : \"abc\" }"}))
                            .collect();
                        let (code, text) = server.send(
                            "POST",
                            "/v1/batch?trace=true",
                            &serde_json::to_string(&batch).unwrap(),
                        );
                        assert_eq!(code, 200, "{text}");
                        let results: Value = serde_json::from_str(&text).unwrap();
                        let results = results["results"].as_array().unwrap().clone();
                        assert_eq!(results.len(), 4);
                        for (i, r) in results.iter().enumerate() {
                            assert_eq!(
                                r["message"]["key"],
                                json!(format!("{client}-{sent}-{i}")),
                                "answers in input order"
                            );
                        }
                        answers.extend(results);
                        sent += 1;
                    }
                    answers
                })
            })
            .collect();
        let wait_for_version = |at_least: u64| {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (_, text) = server.send("GET", "/v1/config", "");
                let config: Value = serde_json::from_str(&text).unwrap();
                // The status of the reload is recorded just after it applies.
                if config["last_reload"]["config_version"].as_u64() >= Some(at_least) {
                    return config;
                }
                assert!(
                    Instant::now() < deadline,
                    "no reload to version {at_least}: {config}\n{}",
                    server.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        std::thread::sleep(Duration::from_millis(300));
        // A valid change: the two stages swap.
        replace(&config, with_stamp("content-analyzer", "message-formatter"));
        let v2 = wait_for_version(2)["config_version"].as_u64().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // A broken change: rejected, the last good one keeps serving.
        replace(
            &config,
            "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: no-such-module}]}]\n",
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let rejected = loop {
            let (_, text) = server.send("GET", "/v1/config", "");
            let c: Value = serde_json::from_str(&text).unwrap();
            if c["last_reload"]["result"] == "rejected" {
                break c;
            }
            assert!(Instant::now() < deadline, "no rejected reload: {c}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(rejected["config_version"].as_u64().unwrap(), v2);
        assert!(
            rejected["last_reload"]["errors"][0]
                .as_str()
                .unwrap()
                .contains("no-such-module"),
            "{rejected}"
        );
        std::thread::sleep(Duration::from_millis(300));
        // The configuration is fixed (back to the one in service: nothing
        // changes); then the module file changes: a module version swap.
        replace(&config, with_stamp("content-analyzer", "message-formatter"));
        std::thread::sleep(Duration::from_millis(600));
        replace(
            &modules.join("stamp.wasm"),
            std::fs::read(fixtures().join("modules/legacy-uppercase.wasm")).unwrap(),
        );
        wait_for_version(v2 + 1);
        let log = server.log_once(|log| log.contains("(1 module compiled)"));
        assert!(log.contains("(1 module compiled)"), "{log}");
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    // Every version's answers are alike: one order of modules, one stamp.
    let mut by_version: BTreeMap<u64, (Vec<String>, String)> = BTreeMap::new();
    for answer in &answers {
        assert_eq!(answer["result"], "delivered", "{answer}");
        let (message, order, version) = ran(answer);
        assert_eq!(
            order.len(),
            3,
            "every module of one configuration ran: {answer}"
        );
        assert_eq!(order[2], "stamp");
        let payload = message["payload"].to_string();
        let seen = by_version
            .entry(version)
            .or_insert_with(|| (order.clone(), payload.clone()));
        assert_eq!(
            seen,
            &(order, payload),
            "version {version} answered two ways"
        );
    }
    let orders: Vec<_> = by_version.values().map(|(o, _)| o[0].clone()).collect();
    assert!(
        orders.contains(&"message-formatter".to_owned()),
        "{by_version:?}"
    );
    assert!(
        orders.contains(&"content-analyzer".to_owned()),
        "{by_version:?}"
    );
    let payloads: Vec<_> = by_version.values().map(|(_, p)| p.clone()).collect();
    assert!(payloads.iter().any(|p| p.contains("abc")), "{by_version:?}");
    assert!(payloads.iter().any(|p| p.contains("ABC")), "{by_version:?}");
    // The metrics agree: every message answered was counted, and the
    // rejected reload too.
    let (_, metrics) = server.send("GET", "/metrics", "");
    let delivered = metric(&metrics, "rustmq_etl_messages_total{result=\"delivered\"}");
    assert_eq!(delivered, answers.len() as f64, "{metrics}");
    // The durations are histograms (execution.md's table), not summaries:
    // every pipeline's messages are in its `+Inf` bucket.
    assert!(
        metrics.contains("# TYPE rustmq_etl_pipeline_duration_seconds histogram")
            && !metrics.contains(" summary"),
        "{metrics}"
    );
    let ran = metric(
        &metrics,
        "rustmq_etl_pipeline_messages_total{pipeline=\"p\",result=\"processed\"}",
    );
    assert!(ran > 0.0, "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "rustmq_etl_pipeline_duration_seconds_bucket{pipeline=\"p\",le=\"+Inf\"}"
        ),
        ran,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "rustmq_etl_reloads_total{result=\"rejected\"}"),
        1.0
    );
    assert_eq!(
        metric(&metrics, "rustmq_etl_reloads_total{result=\"applied\"}"),
        2.0
    );
    assert!(server.stop().success());
}

/// Waits (10 s at most) until `server` serves `expected`: the first
/// pipeline's id in a message's trace and the payload it answers for "abc".
fn serves(server: &Server, expected: (&str, &str)) {
    let serving = || {
        let (code, body) = server.send(
            "POST",
            "/v1/process?trace=true",
            r#"{"topic": "t", "payload": "abc"}"#,
        );
        assert_eq!(code, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        (
            answer["trace"][0]["pipeline"].as_str().unwrap().to_owned(),
            answer["message"]["payload"].as_str().unwrap().to_owned(),
        )
    };
    let waiting = Instant::now();
    while serving() != (expected.0.to_owned(), expected.1.to_owned()) {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "still {:?}, not {expected:?}: {}",
            serving(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Paths through symlinks that are swapped, as Kubernetes updates a mounted
/// ConfigMap (`etl.yaml -> ..data/etl.yaml`, `..data` replaced by a link to a
/// new directory) and as a release directory is switched (`current -> r2`):
/// every swap reloads, the second and later ones too.
#[test]
fn swapped_symlinks_on_the_watched_paths_reload_every_time() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let cm = dir.path().join("cm");
    let pipeline = |id: &str| {
        format!("pipeline_id: {id}\nstages: [{{priority: 0, modules: [{{module_id: m}}]}}]\n")
    };
    // A new version of the ConfigMap: its directory, then `..data` swapped.
    let publish = |version: usize| {
        let data = format!("..v{version}");
        std::fs::create_dir_all(cm.join(&data)).unwrap();
        std::fs::write(
            cm.join(&data).join("etl.yaml"),
            pipeline(&format!("p{version}")),
        )
        .unwrap();
        symlink(&data, cm.join("..data_tmp")).unwrap();
        std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).unwrap();
        if version > 1 {
            std::fs::remove_dir_all(cm.join(format!("..v{}", version - 1))).unwrap();
        }
    };
    publish(1);
    symlink("..data/etl.yaml", cm.join("etl.yaml")).unwrap();
    // Two releases of module `m`: one leaves the payload as it is, the other
    // upper-cases it.
    let sw = dir.path().join("sw");
    for (release, module) in [("r1", "identity"), ("r2", "legacy-uppercase")] {
        std::fs::create_dir_all(sw.join(release)).unwrap();
        std::fs::copy(
            fixtures().join(format!("modules/{module}.wasm")),
            sw.join(release).join("m.wasm"),
        )
        .unwrap();
    }
    let switch = |release: &str| {
        symlink(release, sw.join("current_tmp")).unwrap();
        std::fs::rename(sw.join("current_tmp"), sw.join("current")).unwrap();
    };
    switch("r1");
    let server = Server::start(&[
        "--config",
        cm.join("etl.yaml").to_str().unwrap(),
        "--modules",
        sw.join("current").to_str().unwrap(),
    ]);
    let until = |expected: (&str, &str)| serves(&server, expected);
    until(("p1", "abc"));
    for version in 2..=4 {
        publish(version);
        until((&format!("p{version}"), "abc"));
    }
    switch("r2");
    until(("p4", "ABC"));
    switch("r1");
    until(("p4", "abc"));
    publish(5);
    until(("p5", "abc"));
    let log = server.log();
    assert!(!log.contains("WARN"), "{log}");
    assert!(server.stop().success());
}

/// A configuration given through `..`, a modules directory given through a
/// link in the middle of its path (`srv/current/modules`), that directory
/// removed and made anew: each change is seen, and so are those after it.
#[test]
fn paths_through_dots_links_and_directories_made_anew_are_watched() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("x")).unwrap();
    let config = dir.path().join("etl.yaml");
    let pipeline = |id: &str| {
        format!("pipeline_id: {id}\nstages: [{{priority: 0, modules: [{{module_id: m}}]}}]\n")
    };
    replace(&config, pipeline("p1"));
    let srv = dir.path().join("srv");
    let module = |name: &str| fixtures().join(format!("modules/{name}.wasm"));
    for (release, name) in [("r1", "identity"), ("r2", "legacy-uppercase")] {
        std::fs::create_dir_all(srv.join(release).join("modules")).unwrap();
        std::fs::copy(module(name), srv.join(release).join("modules/m.wasm")).unwrap();
    }
    symlink("r1", srv.join("current")).unwrap();
    let server = Server::start(&[
        "--config",
        dir.path().join("x/../etl.yaml").to_str().unwrap(),
        "--modules",
        srv.join("current/modules").to_str().unwrap(),
    ]);
    let until = |expected: (&str, &str)| serves(&server, expected);
    until(("p1", "abc"));
    replace(&config, pipeline("p2"));
    until(("p2", "abc"));
    symlink("r2", srv.join("current_tmp")).unwrap();
    std::fs::rename(srv.join("current_tmp"), srv.join("current")).unwrap();
    until(("p2", "ABC"));
    // The release's modules directory removed and made anew.
    std::fs::remove_dir_all(srv.join("r2/modules")).unwrap();
    std::fs::create_dir(srv.join("r2/modules")).unwrap();
    std::fs::copy(module("identity"), srv.join("r2/modules/m.wasm")).unwrap();
    until(("p2", "abc"));
    replace(
        &srv.join("r2/modules/m.wasm"),
        std::fs::read(module("legacy-uppercase")).unwrap(),
    );
    until(("p2", "ABC"));
    replace(
        &srv.join("r2/modules/m.wasm"),
        std::fs::read(module("identity")).unwrap(),
    );
    until(("p2", "abc"));
    // Switched to a release whose modules directory is not there yet: the
    // paths lead nowhere for a while; its coming is seen.
    std::fs::create_dir(srv.join("r3")).unwrap();
    symlink("r3", srv.join("current_tmp")).unwrap();
    std::fs::rename(srv.join("current_tmp"), srv.join("current")).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    std::fs::create_dir(srv.join("r3/modules")).unwrap();
    std::fs::copy(module("legacy-uppercase"), srv.join("r3/modules/m.wasm")).unwrap();
    until(("p2", "ABC"));
    // Switched to a release not there at all, made one level at a time.
    symlink("r4", srv.join("current_tmp")).unwrap();
    std::fs::rename(srv.join("current_tmp"), srv.join("current")).unwrap();
    // (Meanwhile the reload is refused: r3's module keeps serving.)
    std::thread::sleep(Duration::from_millis(600));
    until(("p2", "ABC"));
    std::fs::create_dir(srv.join("r4")).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    std::fs::create_dir(srv.join("r4/modules")).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    std::fs::copy(module("identity"), srv.join("r4/modules/m.wasm")).unwrap();
    until(("p2", "abc"));
    assert!(server.stop().success());
}

/// Reading the watched files is not changing them (inotify reports every
/// open, a reload's own reads included): only a write reloads, and once; and
/// files that never stop changing are still reloaded (at most a second after
/// a change).
#[test]
fn reading_the_watched_files_reloads_nothing_and_a_write_reloads_once() {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    let module = modules.join("identity.wasm");
    std::fs::copy(fixtures().join("modules/identity.wasm"), &module).unwrap();
    let config = dir.path().join("etl.yaml");
    // With a warning: logged as the server starts, not again by reloads that
    // find the same.
    let pipeline = "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: identity, topic_filters: [{filter_type: Exact, pattern: \"*\"}]}]}]\n";
    std::fs::write(&config, pipeline).unwrap();
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--modules",
        modules.to_str().unwrap(),
    ]);
    let reloads = || {
        let (_, metrics) = server.send("GET", "/metrics", "");
        ["applied", "unchanged", "rejected"].map(|result| {
            let series = format!("rustmq_etl_reloads_total{{result=\"{result}\"}}");
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
                .unwrap_or(0.0)
        })
    };
    // Waits (10 s at most) until the counts are no longer `from`.
    let until_changed_from = |from: [f64; 3]| {
        let waiting = Instant::now();
        while reloads() == from {
            assert!(
                waiting.elapsed() < Duration::from_secs(10),
                "no reload: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for _ in 0..5 {
        std::fs::read(&config).unwrap();
        std::fs::read(&module).unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(reloads(), [0.0; 3], "{}", server.log());
    // The same text written anew: a reload that finds nothing changed.
    replace(&config, pipeline);
    until_changed_from([0.0; 3]);
    // Its own reads of the files start no other.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(reloads(), [0.0, 1.0, 0.0], "{}", server.log());
    // Written every 100 ms for 2.5 s: never quiet for 250 ms, reloaded all
    // the same while the writes go on.
    let writing = Instant::now();
    while writing.elapsed() < Duration::from_millis(2500) {
        replace(&config, pipeline);
        std::thread::sleep(Duration::from_millis(100));
    }
    let [_, unchanged, _] = reloads();
    assert!(unchanged >= 2.0, "{unchanged} reloads: {}", server.log());
    let log = server.log_once(|log| log.contains("matches only a topic literally named"));
    assert_eq!(
        log.matches("matches only a topic literally named").count(),
        1,
        "{log}"
    );
    // The start's warning is a log line as the reloads' are: timestamped,
    // with its level.
    let line = log
        .lines()
        .find(|l| l.contains("matches only a topic literally named"))
        .unwrap();
    assert!(line.starts_with('[') && line.contains(" WARN "), "{line}");
    // Another warning (the same filter in another stage): logged.
    replace(&config, pipeline.replace("priority: 0", "priority: 1"));
    let waiting = Instant::now();
    while reloads()[0] == 0.0 {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "no reload applied: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log =
        server.log_once(|log| log.matches("matches only a topic literally named").count() >= 2);
    assert_eq!(
        log.matches("matches only a topic literally named").count(),
        2,
        "{log}"
    );
    assert!(log.contains("stage 1, module \"identity\""), "{log}");
    // Written in place in three steps 20 ms apart (emptied, half, the rest),
    // as an editor without a rename saves: read once, whole, after the
    // files have been quiet for 250 ms, not half written.
    let before = reloads();
    let text = pipeline.replace("priority: 0", "priority: 2");
    let (first, second) = text.split_at(text.len() / 2);
    let writing = Instant::now();
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&config).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        file.write_all(first.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        file.write_all(second.as_bytes()).unwrap();
    }
    let took = writing.elapsed();
    until_changed_from(before);
    std::thread::sleep(Duration::from_millis(1500));
    if took < Duration::from_millis(200) {
        assert_eq!(
            reloads(),
            [before[0] + 1.0, before[1], before[2]],
            "{}",
            server.log()
        );
    } else {
        // A stall of the machine let the watcher see the steps apart.
        eprintln!("the three writes took {took:?}: the one-reload count was not checked");
    }
    assert!(server.stop().success());
}

/// The value of a Prometheus series.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// A server of one pipeline of `hostile-slow` (a minute's budget for the
/// call and two for the pipeline; the payload says how many million rounds
/// it spins), started with `args` too.
fn slow_server(args: &[&str]) -> (tempfile::TempDir, Server) {
    server_of(
        "pipeline_id: slow\nglobal_timeout_ms: 120000\nstages:\n  - priority: 0\n    modules:\n      - module_id: hostile-slow\n        instance_config: {execution_timeout_ms: 60000, max_concurrent_instances: 4}\n",
        args,
    )
}

/// A server of the configuration `yaml` (in a directory of its own, with the
/// sample modules), started with `args` too.
fn server_of(yaml: &str, args: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("etl.yaml");
    std::fs::write(&config, yaml).unwrap();
    let modules = fixtures().join("modules");
    let mut all = vec![
        "--config",
        config.to_str().unwrap(),
        "--modules",
        modules.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    (dir, server)
}

/// The CPUs each engine thread of a running server may run on
/// (`/proc/PID/task/*/status`), and the process's own (its main thread's).
#[cfg(target_os = "linux")]
fn engine_threads_cpus(server: &Server) -> (Vec<String>, String) {
    // `None` for a thread that has ended since the directory was listed.
    let allowed = |task: &Path| {
        let status = std::fs::read_to_string(task.join("status")).ok()?;
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
        Some(cpus.trim().to_owned())
    };
    let process = PathBuf::from(format!("/proc/{}", server.pid()));
    let mut engine = Vec::new();
    for task in std::fs::read_dir(process.join("task")).unwrap() {
        let task = task.unwrap().path();
        // The name is cut to 15 bytes: "rustmq-etl-wasm-N" reads "rustmq-etl-wasm".
        let Ok(name) = std::fs::read_to_string(task.join("comm")) else {
            continue;
        };
        if name.trim() == "rustmq-etl-wasm" {
            engine.extend(allowed(&task));
        }
    }
    (engine, allowed(&process).unwrap())
}

/// The CPUs of a `Cpus_allowed_list` ("0-3,6").
#[cfg(target_os = "linux")]
fn cpu_list(list: &str) -> Vec<usize> {
    list.split(',')
        .flat_map(|range| match range.split_once('-') {
            Some((from, to)) => (from.parse().unwrap()..=to.parse().unwrap()).collect(),
            None => vec![range.parse().unwrap()],
        })
        .collect()
}

/// `--pin-workers` keeps each engine thread on one CPU of those the process
/// may use, every CPU taken (an engine thread for each core: the default),
/// and messages still run; without it the engine threads may run wherever
/// the process may.
#[cfg(target_os = "linux")]
#[test]
fn pin_workers_keeps_each_engine_thread_on_one_cpu() {
    for pinned in [false, true] {
        let (_dir, server) = slow_server(if pinned { &["--pin-workers"] } else { &[] });
        let (code, body) = server.send("POST", "/v1/process", r#"{"topic": "t", "payload": "1"}"#);
        assert_eq!(code, 200, "{body}");
        let (engine, process) = engine_threads_cpus(&server);
        let process_cpus = cpu_list(&process);
        assert!(!engine.is_empty(), "no engine thread found");
        if process_cpus.len() == 1 {
            eprintln!("note: one CPU allowed ({process}): pinning is not seen");
        }
        // Fewer engine threads than CPUs (a container's quota): none pinned.
        if !pinned || engine.len() < process_cpus.len() {
            assert!(engine.iter().all(|cpus| *cpus == process), "{engine:?}");
            assert!(server.stop().success());
            continue;
        }
        let mut taken = Vec::new();
        for cpus in &engine {
            let cpu: usize = cpus
                .parse()
                .unwrap_or_else(|_| panic!("not one CPU: {cpus}"));
            assert!(
                process_cpus.contains(&cpu),
                "CPU {cpu} is not among the process's {process}"
            );
            taken.push(cpu);
        }
        taken.sort_unstable();
        taken.dedup();
        assert_eq!(taken, process_cpus, "every CPU has an engine thread");
        assert!(server.stop().success());
    }
}

/// SIGTERM while requests run: each is answered in full, new connections
/// are refused, the process exits 0.
#[test]
fn shutdown_answers_the_requests_in_flight_and_exits_0() {
    let (_dir, server) = slow_server(&[]);
    // Answers say how long an idle kept-alive connection lives: a second
    // less than the head timeout (10 s by default) that closes it.
    let health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let head = raw_head(server.address(), health).to_ascii_lowercase();
    assert!(head.contains("\r\nkeep-alive: timeout=9\r\n"), "{head}");
    // Warm up, and find how long one slow message takes.
    let started = Instant::now();
    let (code, _) = server.send("POST", "/v1/process", r#"{"topic": "t", "payload": "20"}"#);
    assert_eq!(code, 200);
    let one = started.elapsed();
    let answers = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..3)
            .map(|_| {
                let server = &server;
                scope.spawn(move || {
                    server.send("POST", "/v1/process", r#"{"topic": "t", "payload": "200"}"#)
                })
            })
            .collect();
        // The requests are in (each takes about ten times `one`).
        std::thread::sleep(one.max(Duration::from_millis(200)));
        server.signal("TERM");
        std::thread::sleep(Duration::from_millis(100));
        let (ready, _) = server.try_send("GET", "/ready", "");
        requests
            .into_iter()
            .map(|r| r.join().unwrap())
            .collect::<Vec<_>>()
            .into_iter()
            .chain(ready.map(|code| (code, "ready".to_owned())))
            .collect::<Vec<_>>()
    });
    for (code, text) in &answers[..3] {
        assert_eq!(*code, 200, "{text}");
        let answer: Value = serde_json::from_str(text).unwrap();
        assert_eq!(answer["result"], "delivered");
        assert!(answer["message"]["headers"]["x-slow-result"].is_string());
    }
    // After the signal: no new connection is served.
    assert!(
        answers.len() == 3,
        "a request after SIGTERM was answered: {answers:?}"
    );
    let status = server.wait();
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(server
        .log()
        .contains("every request in flight was answered"));
}

/// `--shutdown-delay-seconds`: after the signal the server goes on taking
/// connections and serving them, `/ready` answering 503, for the delay; then
/// it shuts down as without one. Every answer is timed by route.
#[test]
fn a_shutdown_delay_serves_on_with_ready_503() {
    let (_dir, server) = slow_server(&["--shutdown-delay-seconds", "3"]);
    let (code, _) = server.send("POST", "/v1/process", r#"{"topic": "t", "payload": "1"}"#);
    assert_eq!(code, 200);
    server.signal("TERM");
    let signalled = Instant::now();
    // The shutdown has begun: /ready says so, on new connections.
    let waited = Instant::now();
    loop {
        let (code, text) = server.send("GET", "/ready", "");
        if code == 503 {
            assert!(text.contains("shutting_down"), "{text}");
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(10), "{code} {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Messages are still served, on new connections; each answer tells the
    // client to close it (its next goes elsewhere).
    let (code, text) = server.send("POST", "/v1/process", r#"{"topic": "t", "payload": "1"}"#);
    assert_eq!(code, 200, "{text}");
    let head =
        raw_head(server.address(), b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").to_ascii_lowercase();
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert!(!head.contains("keep-alive:"), "{head}");
    let (_, metrics) = server.send("GET", "/metrics", "");
    assert!(
        metric(
            &metrics,
            r#"rustmq_etl_http_request_duration_seconds_count{route="/v1/process"}"#
        ) >= 2.0,
        "{metrics}"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "the test was too slow to tell"
    );
    let status = server.wait();
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(signalled.elapsed() >= Duration::from_secs(3));
    let log = server.log();
    assert!(
        log.contains("SIGTERM: shutting down in 3 s: /ready answers 503")
            && log.contains("every request in flight was answered"),
        "{log}"
    );
}

/// `--max-body-bytes-in-flight`: the bodies held at once are bounded; a
/// request that would pass the bound waits for room within its body timeout,
/// then is answered 503, and is served once room is made. A bound below
/// `--max-request-bytes` is refused at start.
#[test]
fn request_bodies_in_hand_are_bounded() {
    let (_dir, server) = slow_server(&[
        "--max-request-bytes",
        "1024",
        "--max-body-bytes-in-flight",
        "1024",
        "--body-timeout-ms",
        "500",
    ]);
    // A client that announces a body and sends none of it holds no room:
    // another request is served meanwhile.
    let announcer = {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(server.address()).unwrap();
        stream
            .write_all(b"POST /v1/process HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            .unwrap();
        stream
    };
    std::thread::sleep(Duration::from_millis(50));
    let (code, text) = server.send("POST", "/v1/process", r#"{"topic": "t", "payload": "1"}"#);
    assert_eq!(code, 200, "{text}");
    drop(announcer);
    std::thread::scope(|scope| {
        // Holds the room (its body's KiB) while it runs.
        let slow = scope.spawn(|| {
            server.send(
                "POST",
                "/v1/process",
                r#"{"topic": "t", "payload": "4000"}"#,
            )
        });
        until_one_in_flight(|| server.send("GET", "/metrics", "").1);
        let started = Instant::now();
        let (code, text) = server.send("POST", "/v1/process", r#"{"topic": "t", "payload": "1"}"#);
        assert_eq!(code, 503, "{text}");
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert!(
            text.contains(
                "busy: the request bodies in hand fill --max-body-bytes-in-flight (1024 bytes) and none made room for the rest of this one within 500 ms"
            ),
            "{text}"
        );
        let (code, text) = slow.join().unwrap();
        assert_eq!(code, 200, "{text}");
    });
    let (code, text) = server.send("POST", "/v1/process", r#"{"topic": "t", "payload": "1"}"#);
    assert_eq!(code, 200, "{text}");
    assert!(server.stop().success());

    let dir = tempfile::tempdir().unwrap();
    let out = server::tool()
        .args(["serve", "--config"])
        .arg(fixtures().join("pipelines"))
        .args([
            "--max-request-bytes",
            "2048",
            "--max-body-bytes-in-flight",
            "1024",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--max-body-bytes-in-flight 1024 is less than --max-request-bytes 2048"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client that takes a large answer slowly (here: not at all) holds no
/// room among the bodies in hand once its answer is handed over to be
/// written: it cannot keep every other request waiting for room.
#[test]
fn a_slow_reader_of_a_large_answer_holds_no_room_for_long() {
    let limit = (32usize << 20).to_string();
    let (_dir, server) = server_of(
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: identity}]}]\n",
        &[
            "--max-request-bytes",
            &limit,
            "--max-body-bytes-in-flight",
            &limit,
            "--body-timeout-ms",
            "1500",
            "--no-watch",
        ],
    );
    // Nearly 32 MiB of messages, echoed back: more than the sockets' buffers
    // take, so the answer stays unsent while nobody reads it.
    let message = format!(r#"{{"topic": "t", "payload": "{}"}}"#, "x".repeat(8000));
    // (Fewer than --max-batch's 4,096.)
    let count = 4000;
    let batch = format!("[{}]", vec![message; count].join(","));
    assert!(batch.len() <= 32 << 20);
    let unread = {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(server.address()).unwrap();
        write!(
            stream,
            "POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            batch.len()
        )
        .unwrap();
        stream.write_all(batch.as_bytes()).unwrap();
        stream
    };
    // Its messages ran: the answer is ready, and waits to be read.
    let waited = Instant::now();
    loop {
        let (_, metrics) = server.send("GET", "/metrics", "");
        if metric(&metrics, r#"rustmq_etl_messages_total{result="delivered"}"#) >= count as f64 {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(60), "never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another request finds room.
    let (code, text) = server.send("POST", "/v1/process", r#"{"topic": "t", "payload": "p"}"#);
    assert_eq!(code, 200, "{text}");
    drop(unread);
    assert!(server.stop().success());
}

/// A SIGTERM as soon as the server says where it serves is a graceful
/// shutdown: it listens for signals before it says so.
#[test]
fn a_signal_as_soon_as_it_serves_is_a_graceful_shutdown() {
    for _ in 0..5 {
        let (_dir, server) = slow_server(&[]);
        let status = server.stop();
        assert!(status.success(), "{status:?}: {}", server.log());
        assert!(
            server.log().contains("SIGTERM: shutting down"),
            "{}",
            server.log()
        );
    }
}

/// A second signal during the shutdown's grace ends the process at once: the
/// request still running is not answered, the status is 128 + the signal.
#[test]
fn a_second_signal_ends_a_shutdown_at_once() {
    let (_dir, server) = slow_server(&[]);
    let (code, _) = server.send("POST", "/v1/process", r#"{"topic": "t", "payload": "1"}"#);
    assert_eq!(code, 200);
    let (answer, status) = std::thread::scope(|scope| {
        // Thousands of million rounds: far longer than the test.
        let request = scope.spawn(|| {
            server.try_send(
                "POST",
                "/v1/process",
                r#"{"topic": "t", "payload": "50000"}"#,
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        server.signal("TERM");
        std::thread::sleep(Duration::from_millis(300));
        server.signal("INT");
        let status = server.wait();
        (request.join().unwrap(), status)
    });
    assert_eq!(status.code(), Some(130), "{}", server.log());
    assert_eq!(answer.0, None, "answered: {answer:?}");
}

/// Waits (20 s at most) until the Prometheus text `metrics` gives shows one
/// message in flight.
fn until_one_in_flight(metrics: impl Fn() -> String) {
    let waited = Instant::now();
    while !metrics().contains("rustmq_etl_messages_in_flight 1") {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "never in flight"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (20 s at most) until the Prometheus text `metrics` gives shows a
/// module's instance in use: a call running.
fn until_a_call_runs(metrics: impl Fn() -> String) {
    let waited = Instant::now();
    while !metrics()
        .lines()
        .any(|line| line.starts_with("rustmq_etl_pool_instances_in_use{") && line.ends_with(" 1"))
    {
        assert!(waited.elapsed() < Duration::from_secs(20), "no call ran");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` on a new connection to `address`: the status and the body.
fn get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let code = answer.split(' ').nth(1).and_then(|c| c.parse().ok());
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code.unwrap_or(0), body.to_owned())
}

/// `--admin-listen`: the probes and the metrics on connections of their own.
/// They answer while every connection of the main listener is taken, and
/// through a shutdown's grace, where `/ready` says 503 while the requests in
/// flight finish; nothing else is served there. Its answers are logged by
/// `--access-log` and counted, as the main listener's are.
#[test]
fn the_admin_listener_answers_while_the_connections_are_taken_and_through_a_shutdown() {
    let (_dir, server) = slow_server(&[
        "--max-connections",
        "1",
        "--admin-listen",
        "127.0.0.1:0",
        "--access-log",
    ]);
    let log = server.log_once(|log| log.contains("admin endpoints"));
    let admin = log
        .lines()
        .find_map(|l| {
            l.split("admin endpoints (/health, /ready, /metrics) at http://")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no admin address in\n{log}"))
        .trim()
        .to_owned();
    std::thread::scope(|scope| {
        // The one connection taken by a slow request.
        let request = scope.spawn(|| {
            server.send(
                "POST",
                "/v1/process",
                r#"{"topic": "t", "payload": "4000"}"#,
            )
        });
        until_one_in_flight(|| get(&admin, "/metrics").1);
        assert_eq!(get(&admin, "/health").0, 200);
        assert_eq!(get(&admin, "/ready").0, 200);
        let log = server.log_once(|log| log.contains("\"GET /ready HTTP/1.1\" 200 "));
        assert!(log.contains("\"GET /ready HTTP/1.1\" 200 "), "{log}");
        let (_, metrics) = get(&admin, "/metrics");
        assert!(
            metrics
                .lines()
                .any(|l| l
                    .starts_with(r#"rustmq_etl_http_requests_total{route="/ready",status="200"}"#)),
            "{metrics}"
        );
        let (code, text) = get(&admin, "/v1/config");
        assert_eq!(code, 404, "{text}");
        let head = raw_head(
            &admin,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 405"), "{head}");
        assert!(
            text.contains("serves GET /health, GET /ready and GET /metrics only"),
            "{text}"
        );
        // A shutdown: the main listener is closed; the admin one says so.
        server.signal("TERM");
        let waited = Instant::now();
        loop {
            let (code, text) = get(&admin, "/ready");
            if code == 503 {
                assert!(text.contains("shutting_down"), "{text}");
                break;
            }
            assert!(waited.elapsed() < Duration::from_secs(20), "{code} {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(get(&admin, "/health").0, 200);
        let (code, text) = request.join().unwrap();
        assert_eq!(code, 200, "{text}");
    });
    let status = server.wait();
    assert!(status.success(), "{status:?}\n{}", server.log());
    // Gone with the server.
    assert!(std::net::TcpStream::connect(&admin).is_err());
}

/// Bodies past 64 KiB are read and answered on a blocking thread (so that
/// they hold up no other connection): the same answers as small ones, the
/// same content type, and a bad large body refused as a small one is.
#[test]
fn large_bodies_are_read_and_answered_as_small_ones() {
    let (_dir, server) = server_of(
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: identity}]}]\n",
        &["--no-watch"],
    );
    let payload = |i: usize| format!("{i:0>300}");
    let line = |i: usize| format!(r#"{{"topic":"t","key":"k{i}","payload":"{}"}}"#, payload(i));
    let body: String = (0..400).map(|i| line(i) + "\n").collect();
    assert!(body.len() > 64 << 10);
    let (code, text) = server.send("POST", "/v1/batch", &body);
    assert_eq!(code, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 400);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["result"], "delivered", "{result}");
        assert_eq!(result["message"]["payload"], payload(i), "{result}");
        // As a small body answers the same message.
        let (_, alone) = server.send("POST", "/v1/batch", &line(i));
        let alone: Value = serde_json::from_str(&alone).unwrap();
        assert_eq!(result, &alone["results"][0]);
        if i > 3 {
            break;
        }
    }
    // One large message.
    let large = format!(r#"{{"topic":"t","payload":"{}"}}"#, "y".repeat(100 << 10));
    let (code, text) = server.send("POST", "/v1/process", &large);
    assert_eq!(code, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["message"]["payload"].as_str().map(str::len),
        Some(100 << 10)
    );
    let head = raw_head(
        server.address(),
        format!(
            "POST /v1/process HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{large}",
            large.len()
        )
        .as_bytes(),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json\r\n"),
        "{head}"
    );
    // Refused alike: not UTF-8 past the limit, and a bad line among many.
    let mut bytes = body.clone().into_bytes();
    bytes[70_000] = 0xff;
    let (code, text) = server.send_bytes("POST", "/v1/batch", &bytes);
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("the request body is not UTF-8 (at byte 70000)"),
        "{text}"
    );
    let (code, text) = server.send("POST", "/v1/batch", &(body.clone() + "nope\n"));
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("line 401: not valid JSON"), "{text}");
}

/// Sends `request` on a new connection and reads until the server closes it
/// or the head of its answer is in: the status, or `None` when the server
/// closed the connection without answering. Waits 20 s at most (then
/// fails: the server held the connection).
fn raw(address: &str, request: &[u8]) -> Option<u16> {
    let head = raw_head(address, request);
    head.split(' ').nth(1).and_then(|code| code.parse().ok())
}

/// [`raw`]'s answer head as text (empty when the server closed the
/// connection without answering).
fn raw_head(address: &str, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e) => panic!("no answer and the connection is still open: {e}"),
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// A limit of open files too low for `--max-connections` is raised as far as
/// the hard limit allows, and said when that is not enough (connections past
/// it failed to be accepted, a warning each, 20 a second).
#[test]
fn a_limit_of_open_files_too_low_for_the_connections_is_said() {
    use std::io::BufRead;
    let tool = server::tool();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 200 && exec \"$@\"")
        .arg("sh")
        .arg(tool.get_program())
        .args(["serve", "--config"])
        .arg(fixtures().join("pipelines"))
        .arg("--modules")
        .arg(fixtures().join("modules"))
        .args(["--listen", "127.0.0.1:0", "--no-watch"])
        .envs(tool.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let serving = line.contains("serving configuration");
        said.push(line);
        if serving {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let said = said.join("\n");
    assert!(
        said.contains(
            "the process may open at most 200 files (its hard limit, `ulimit -Hn`): with \
             --max-connections 1024, and 64 kept for its own files, about 136 connections can be \
             open at once"
        ),
        "{said}"
    );
}

/// A request the HTTP layer cannot read is answered there (400, 414, 431),
/// or closed unanswered (an HTTP/2 preface), before any route, and counted
/// by why (docs/serve.md, "Metrics").
#[test]
fn requests_the_http_layer_refuses_are_counted() {
    let server = Server::start(&[
        "--config",
        fixtures().join("pipelines").to_str().unwrap(),
        "--modules",
        fixtures().join("modules").to_str().unwrap(),
        "--no-watch",
    ]);
    let address = server.address();
    assert_eq!(raw(address, b"GARBAGE\r\n\r\n"), Some(400));
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    assert_eq!(raw(address, long.as_bytes()), Some(414));
    let mut many = String::from("GET /health HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-{i}: y\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(raw(address, many.as_bytes()), Some(431));
    // An HTTP/2 client's preface: closed unanswered.
    assert_eq!(raw(address, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), None);
    // Counted as each connection ends, which may come just after its answer.
    let counts = || {
        let (_, metrics) = server.send("GET", "/metrics", "");
        let unparsed = |reason: &str| {
            let series = format!("rustmq_etl_http_unparsed_requests_total{{reason=\"{reason}\"}}");
            metrics.contains(&series).then(|| metric(&metrics, &series))
        };
        (
            unparsed("malformed"),
            unparsed("too_large"),
            unparsed("http2"),
        )
    };
    let expected = (Some(1.0), Some(2.0), Some(1.0));
    let waiting = std::time::Instant::now();
    while counts() != expected && waiting.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(counts(), expected);
    // Every series of this service has its help text, the engine's too.
    let (status, _) = server.send(
        "POST",
        "/v1/process",
        r#"{"topic": "iot.sensors.temperature", "payload": {"sensor_type": "temperature", "unit": "celsius", "reading": 21.5}}"#,
    );
    assert_eq!(status, 200);
    let (_, metrics) = server.send("GET", "/metrics", "");
    let typed: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE rustmq_etl_"))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(typed.len() > 20, "{metrics}");
    for series in typed {
        assert!(
            metrics.contains(&format!("# HELP rustmq_etl_{series} ")),
            "no help for rustmq_etl_{series}"
        );
    }
}

/// Slow and stalled clients hold nothing for long (docs/serve.md, the flags
/// and "Errors"): a connection whose request head does not come within
/// `--head-timeout-ms` is closed; a body announced larger than
/// `--max-request-bytes` is 413 at once, one sent in chunks past it too; a
/// body that stops coming is 408 after `--body-timeout-ms`; a client that
/// stops reading its answers loses its connection after
/// `--write-timeout-ms` (here the only one: `--max-connections 1`);
/// parameters on a reload are 400. A shutdown waits
/// `--shutdown-grace-seconds` at most for the requests in flight, and for
/// the module calls running, and says so when it gives up.
#[test]
fn slow_clients_hold_nothing_and_a_shutdown_waits_only_its_grace() {
    let (_dir, server) = slow_server(&[
        "--max-request-bytes",
        "1000",
        "--head-timeout-ms",
        "300",
        "--body-timeout-ms",
        "300",
        "--shutdown-grace-seconds",
        "1",
    ]);
    let address = server.address();
    // Under two seconds of head timeout, no keep-alive hint.
    let health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let head = raw_head(address, health).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 200") && !head.contains("keep-alive"),
        "{head}"
    );
    // A head that never ends, and no request at all: closed unanswered.
    assert_eq!(
        raw(address, b"POST /v1/process HTTP/1.1\r\nHost: x\r\n"),
        None
    );
    assert_eq!(raw(address, b""), None);
    // A body announced too large: refused before it is sent.
    let announced = b"POST /v1/process HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n";
    assert_eq!(raw(address, announced), Some(413));
    // Chunks past the limit.
    let mut chunked =
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n".to_vec();
    chunked.extend_from_slice(&[b' '; 2000]);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(raw(address, &chunked), Some(413));
    // A body that stops halfway.
    let halfway = b"POST /v1/process HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"topic\": ";
    assert_eq!(raw(address, halfway), Some(408));
    // A client that sends requests and never reads the answers: its
    // connection (the only one of another server) is closed once a write
    // waits too long, and the next client is served.
    {
        use std::io::Write;
        let (_dir, one) = slow_server(&["--max-connections", "1", "--write-timeout-ms", "300"]);
        let mut greedy = std::net::TcpStream::connect(one.address()).unwrap();
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2_000);
        // The server stops reading once its writes block: what it has not
        // taken by then may fail to send, which is the point.
        let _ = greedy.write_all(&request);
        let health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(raw(one.address(), health), Some(200));
    }
    // Parameters on a reload (a misspelt dry run must not reload); reading
    // routes ignore them.
    let (code, text) = server.send("POST", "/v1/reload?dry_run=true", "");
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("POST /v1/reload takes no query parameters"),
        "{text}"
    );
    assert_eq!(server.send("GET", "/health?probe=1", "").0, 200);
    let (code, text) = server.send(
        "POST",
        "/v1/process?in_order=true",
        r#"{"topic": "t", "payload": "1"}"#,
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("in_order is for POST /v1/batch"), "{text}");
    // A compressed body, an array to /v1/process, an empty batch: each told
    // what to send instead.
    let gzip = b"POST /v1/process HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n\x1f\x8b";
    assert_eq!(raw(address, gzip), Some(415));
    // `identity` is no compression: read as any body.
    let identity = b"POST /v1/process HTTP/1.1\r\nHost: x\r\nContent-Encoding: identity\r\nContent-Length: 30\r\n\r\n{\"topic\": \"t\", \"payload\": \"1\"}";
    assert_eq!(raw(address, identity), Some(200));
    let (code, text) = server.send("POST", "/v1/process", r#"[{"topic": "t"}]"#);
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("send an array of messages to POST /v1/batch"),
        "{text}"
    );
    let (code, text) = server.send("POST", "/v1/batch", " ");
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("send messages as a JSON array of objects or as JSON Lines"),
        "{text}"
    );
    // The server still serves.
    let (code, text) = server.send("POST", "/v1/process", r#"{"topic": "t", "payload": "1"}"#);
    assert_eq!(code, 200, "{text}");

    // A request that outlasts the grace (its call would run for its whole
    // minute): the shutdown waits for neither the answer nor the call.
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| {
            server.try_send(
                "POST",
                "/v1/process",
                r#"{"topic": "t", "payload": "1000000"}"#,
            )
        });
        // Until the message is in the engine.
        until_one_in_flight(|| server.send("GET", "/metrics", "").1);
        let signalled = Instant::now();
        server.signal("TERM");
        let status = server.wait();
        assert!(status.success(), "{status:?}\n{}", server.log());
        // Far below the call's minute: the grace and no more (a bound of
        // behaviour, not of speed).
        assert!(
            signalled.elapsed() < Duration::from_secs(30),
            "{}",
            server.log()
        );
        let (code, _) = slow.join().unwrap();
        assert_eq!(code, None, "the slow request was not answered");
    });
    let log = server.log();
    assert!(
        log.contains("stopped after 1 s with 1 connection still open")
            && log
                .contains("1 message still running in the engine when the shutdown's 1 s were up"),
        "{log}"
    );
}

/// A shutdown with grace left waits for the engine's calls of requests
/// whose clients gave up (the metrics thread let go of the server first:
/// while it held on, the process exited with the call still running).
#[test]
fn a_shutdown_waits_within_its_grace_for_the_calls_of_clients_that_left() {
    use std::io::Write as _;
    let (_dir, server) = server_of(
        "pipeline_id: slow\nstages: [{priority: 0, modules: [{module_id: hostile-slow, \
         instance_config: {execution_timeout_ms: 60000}}]}]\n",
        &["--no-watch", "--shutdown-grace-seconds", "60"],
    );
    // How long the call takes here, answered.
    let body = r#"{"topic": "t", "payload": "1500"}"#;
    let started = Instant::now();
    assert_eq!(server.send("POST", "/v1/process", body).0, 200);
    let call = started.elapsed();
    // The same call, its client gone once it is in the engine.
    let mut stream = std::net::TcpStream::connect(server.address()).unwrap();
    let sent = Instant::now();
    write!(
        stream,
        "POST /v1/process HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Running, not only admitted: a message its engine thread has not
    // started yet is not started once its client has gone.
    until_a_call_runs(|| server.send("GET", "/metrics", "").1);
    drop(stream);
    server.signal("TERM");
    assert!(server.wait().success(), "{}", server.log());
    // The process ended once the call had: not at once (a bound of
    // behaviour: the call is seconds long, an exit without it milliseconds).
    assert!(
        sent.elapsed() >= call / 2,
        "exited {:?} after the call began, which takes {call:?}\n{}",
        sent.elapsed(),
        server.log()
    );
    assert!(
        !server.log().contains("still running in the engine"),
        "{}",
        server.log()
    );
}

/// A configuration that does not load and one whose module does not are
/// both rejected reloads, counted in one series (the one was counted apart
/// and the larger of the two counts published).
#[test]
fn every_rejected_reload_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("etl.yaml");
    let good = "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: identity}]}]\n";
    std::fs::write(&config, good).unwrap();
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--modules",
        fixtures().join("modules").to_str().unwrap(),
        "--no-watch",
    ]);
    let rejected = |body: &str| {
        std::fs::write(&config, body).unwrap();
        let (code, text) = server.send("POST", "/v1/reload", "");
        assert_eq!(code, 422, "{text}");
    };
    rejected("pipeline_id: [\n");
    rejected(&good.replace("identity", "no-such-module"));
    rejected("pipeline_id: [\n");
    let (_, metrics) = server.send("GET", "/metrics", "");
    assert_eq!(
        metric(&metrics, "rustmq_etl_reloads_total{result=\"rejected\"}"),
        3.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "rustmq_etl_config_version"), 1.0);
    assert!(server.stop().success());
}

/// Bad requests get a 4xx and a JSON error that says what is wrong.
#[test]
fn bad_requests_get_4xx_with_a_reason() {
    let server = Server::start(&[
        "--config",
        fixtures().join("pipelines").to_str().unwrap(),
        "--modules",
        fixtures().join("modules").to_str().unwrap(),
        "--max-request-bytes",
        "1000",
        "--max-batch",
        "2",
        "--no-watch",
    ]);
    let cases: &[(&str, &str, String, u16, &str)] = &[
        (
            "POST",
            "/v1/process",
            String::new(),
            400,
            "the request body is empty",
        ),
        (
            "POST",
            "/v1/process",
            "{\"topic\": ".into(),
            400,
            "the message: ",
        ),
        (
            "POST",
            "/v1/process",
            "{\"payload\": 1}".into(),
            400,
            "topic",
        ),
        (
            "POST",
            "/v1/process",
            format!(
                "{{\"topic\": \"t\", \"payload\": \"{}\"}}",
                "x".repeat(2000)
            ),
            413,
            "larger than 1000 bytes",
        ),
        (
            "POST",
            "/v1/process?trace=yes",
            "{\"topic\": \"t\", \"payload\": 1}".into(),
            400,
            "trace=true|false",
        ),
        (
            "POST",
            "/v1/batch?traces=true",
            "{\"topic\": \"t\", \"payload\": 1}".into(),
            400,
            "unknown field `traces`",
        ),
        (
            "POST",
            "/v1/batch",
            "[{\"topic\": \"t\", \"payload\": null}, {\"topic\": 7, \"payload\": null}]".into(),
            400,
            "message 1: ",
        ),
        (
            "POST",
            "/v1/batch",
            "{\"topic\": \"t\", \"payload\": 1}\n\n{\"topic\": \"t\"\n".into(),
            400,
            "line 3: ",
        ),
        (
            "POST",
            "/v1/batch",
            "[{\"topic\": \"t\"}, ".into(),
            400,
            "not a JSON array of messages",
        ),
        (
            "POST",
            "/v1/batch",
            "[{\"topic\": \"a\"}, {\"topic\": \"b\"}, {\"topic\": \"c\"}]".into(),
            413,
            "at most 2",
        ),
        (
            "GET",
            "/v1/processs",
            String::new(),
            404,
            "no route GET /v1/processs",
        ),
        (
            "GET",
            "/v1/process",
            String::new(),
            405,
            "/v1/process does not take GET",
        ),
    ];
    for (method, path, body, status, says) in cases {
        let (code, text) = server.send(method, path, body);
        assert_eq!(code, *status, "{method} {path}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        let error = error["error"].as_str().unwrap();
        assert!(
            error.contains(says),
            "{method} {path}: {error:?} should say {says:?}"
        );
    }
    // Bad bytes that are not UTF-8.
    let (code, text) = server.send_bytes("POST", "/v1/process", b"{\"topic\": \"\xff\"}");
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("not UTF-8"), "{text}");
    // None of it was processed; the server serves on.
    let (code, text) = server.send("POST", "/v1/process", r#"{"topic": "t", "payload": ""}"#);
    assert_eq!((code, text.contains("delivered")), (200, true), "{text}");
    let (_, metrics) = server.send("GET", "/metrics", "");
    assert_eq!(
        metric(&metrics, "rustmq_etl_messages_total{result=\"delivered\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "rustmq_etl_http_requests_total{route=\"/v1/process\",status=\"400\"}"
        ),
        5.0,
        "{metrics}"
    );
    // The process's own CPU time and memory (design.md's system metrics).
    assert!(
        metric(&metrics, "process_cpu_seconds_total") > 0.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "process_resident_memory_bytes") > 1e6,
        "{metrics}"
    );
    assert!(server.stop().success());
}

/// A server that cannot start says why and exits non-zero.
#[test]
fn a_server_that_cannot_start_says_why() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = server::tool()
        .args([
            "serve",
            "--config",
            fixtures().join("pipelines").to_str().unwrap(),
            "--modules",
            fixtures().join("modules").to_str().unwrap(),
            "--listen",
            &address,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
    let out = server::tool()
        .args([
            "serve",
            "--config",
            fixtures().join("pipelines").to_str().unwrap(),
            "--modules",
            "/nonexistent",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent: no such directory of modules"),
        "{stderr}"
    );
    // An address that is none is refused by the parser, before anything loads.
    let out = server::tool()
        .args(["serve", "--config", "/nonexistent", "--listen", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'nonsense' for '--listen <ADDR>'")
            && stderr.contains("give HOST:PORT"),
        "{stderr}"
    );
    // No host, or an IPv6 address without brackets: not HOST:PORT either.
    for listen in [":8080", "::1"] {
        let out = server::tool()
            .args(["serve", "--config", "/nonexistent", "--listen", listen])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("give HOST:PORT"), "{listen}: {stderr}");
    }
}

/// `POST /v1/batch?in_order=true` runs the batch's messages one after another,
/// each to its end: which of them meet the breaker their predecessors opened
/// is that of input order, the same on every request.
#[test]
fn a_batch_in_order_meets_the_breaker_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "pipeline_id: p\nerror_handling: SendToDeadLetter\n\
         stages: [{priority: 0, modules: [{module_id: hostile-trap}]}]\n",
    )
    .unwrap();
    let server = Server::start(&[
        "--config",
        dir.path().join("p.yaml").to_str().unwrap(),
        "--modules",
        fixtures().join("modules").to_str().unwrap(),
        "--breaker-failures",
        "2",
        "--no-watch",
    ]);
    let batch: String = (0..6)
        .map(|i| format!("{{\"topic\": \"t\", \"payload\": \"m{i}\"}}\n"))
        .collect();
    let (status, body) = server.send("POST", "/v1/batch?in_order=true", &batch);
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let kinds: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["result"], "dead_lettered", "{r}");
            r["message"]["headers"]["etl-dlq-error-kind"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "trap",
            "trap",
            "circuit_open",
            "circuit_open",
            "circuit_open",
            "circuit_open"
        ]
    );
    let (status, body) = server.send("POST", "/v1/batch?in_order=maybe", &batch);
    assert_eq!(status, 400);
    assert!(body.contains("in_order=true|false"), "{body}");
}

/// A client that closes its connection before its body is in has no access
/// line and no count (nobody reads the answer); a body whose framing is
/// broken is answered 400 and has both.
#[test]
fn a_client_that_leaves_mid_body_is_not_an_answer() {
    use std::io::Write;
    let identity = "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: identity}]}]\n";
    let (_dir, server) = server_of(identity, &["--access-log", "--no-watch"]);
    let mut left = std::net::TcpStream::connect(server.address()).unwrap();
    left.write_all(
        b"POST /v1/process HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"topic\"",
    )
    .unwrap();
    drop(left);
    let broken = raw(
        server.address(),
        b"POST /v1/process HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    );
    assert_eq!(broken, Some(400));
    // The broken body's line; the other would have come first, and is
    // given a second more.
    server.log_once(|log| log.contains("\"POST /v1/process HTTP/1.1\" 400"));
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs(1) {
        let log = server.log();
        assert_eq!(
            log.matches("\"POST /v1/process HTTP/1.1\" 400").count(),
            1,
            "{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, metrics) = server.send("GET", "/metrics", "");
    assert_eq!(
        metric(
            &metrics,
            r#"rustmq_etl_http_requests_total{route="/v1/process",status="400"}"#
        ),
        1.0,
        "{metrics}"
    );
}

/// `--access-log` logs a line for each answer — the client's address, the
/// request line, the status, the body's bytes, the time — and without it
/// no such line is logged.
#[test]
fn the_access_log_has_a_line_for_each_answer_when_asked_for() {
    let identity = "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: identity}]}]\n";
    let (_dir, server) = server_of(identity, &["--access-log", "--no-watch"]);
    let (status, body) = server.send(
        "POST",
        "/v1/process?trace=false",
        r#"{"topic": "t", "payload": "hi"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.send("GET", "/nowhere", "").0, 404);
    let log = server.log_once(|log| log.matches("rustmq_etl::access").count() >= 2);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rustmq_etl::access"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    // `127.0.0.1:PORT "POST /v1/process?trace=false HTTP/1.1" 200 BYTES T ms`
    let (_, peer) = lines[0].split_once("] 127.0.0.1:").unwrap();
    let (port, rest) = peer.split_once(' ').unwrap();
    assert!(port.parse::<u16>().is_ok(), "{log}");
    let request = format!(
        "\"POST /v1/process?trace=false HTTP/1.1\" 200 {} ",
        body.len()
    );
    assert!(rest.starts_with(&request) && rest.ends_with(" ms"), "{log}");
    assert!(lines[1].contains("\"GET /nowhere HTTP/1.1\" 404 "), "{log}");
    server.stop();

    let (_dir, quiet) = server_of(identity, &["--no-watch"]);
    assert_eq!(quiet.send("GET", "/health", "").0, 200);
    quiet.stop();
    assert!(
        !quiet.log().contains("rustmq_etl::access"),
        "{}",
        quiet.log()
    );
}

/// `--no-reload-endpoint`: `POST /v1/reload` answers 403 and reloads
/// nothing; the rest is served as ever.
#[test]
fn the_reload_endpoint_can_be_turned_off() {
    let identity = "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: identity}]}]\n";
    let (_dir, server) = server_of(identity, &["--no-reload-endpoint", "--no-watch"]);
    let (status, body) = server.send("POST", "/v1/reload", "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--no-reload-endpoint"), "{body}");
    let (status, config) = server.send("GET", "/v1/config", "");
    assert_eq!(status, 200, "{config}");
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["config_version"], 1, "{config}");
    assert!(config["last_reload"].is_null(), "{config}");
    assert_eq!(
        server
            .send("POST", "/v1/process", r#"{"topic": "t", "payload": "x"}"#)
            .0,
        200
    );
    server.stop();
}

/// `--max-request-bytes` is the most a body may have: a body of exactly
/// that many bytes is read, one byte more is answered 413, on `/v1/process`
/// and `/v1/batch` alike; and an answer made while the body was read (the
/// 413) is counted in `rustmq_etl_http_requests_total` and logged by
/// `--access-log`, as a handler's answer is.
#[test]
fn the_body_limit_is_the_most_accepted_and_a_refused_body_is_counted_and_logged() {
    let identity = "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: identity}]}]\n";
    let limit = 200;
    let (_dir, server) = server_of(
        identity,
        &[
            "--max-request-bytes",
            &limit.to_string(),
            "--access-log",
            "--no-watch",
        ],
    );
    // A message padded with spaces to `len` bytes (JSON ignores them).
    let sized = |message: &str, len: usize| format!("{message:<len$}");
    for (path, message) in [
        ("/v1/process", r#"{"topic": "t", "payload": "hi"}"#),
        ("/v1/batch", r#"[{"topic": "t", "payload": "hi"}]"#),
    ] {
        let (status, body) = server.send("POST", path, &sized(message, limit));
        assert_eq!(status, 200, "{path}, {limit} bytes: {body}");
        let (status, body) = server.send("POST", path, &sized(message, limit + 1));
        assert_eq!(status, 413, "{path}, {} bytes: {body}", limit + 1);
    }
    let (_, metrics) = server.send("GET", "/metrics", "");
    for route in ["/v1/process", "/v1/batch"] {
        let line = format!(r#"rustmq_etl_http_requests_total{{route="{route}",status="413"}} 1"#);
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    let log = server.log_once(|log| log.matches("\" 413 ").count() >= 2);
    assert_eq!(log.matches("\" 413 ").count(), 2, "{log}");
    server.stop();
}

/// A module whose file is not there: the server starts and is ready; the
/// occurrence says `unavailable` in `GET /v1/config`; a message that needs it
/// fails `unavailable` (dead-lettered here, by its pipeline's strategy); a
/// reload of the same configuration answers `unchanged`, listing it under
/// `unavailable`; and once the file is there, a reload loads it.
#[test]
fn a_module_not_there_is_unavailable_and_the_service_ready() {
    let yaml = "pipeline_id: p\nerror_handling: SendToDeadLetter\nstages: [{priority: 0, modules: [{module_id: not-yet}]}]\n";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("etl.yaml");
    std::fs::write(&config, yaml).unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--modules",
        modules.to_str().unwrap(),
        "--no-watch",
    ]);
    assert_eq!(server.send("GET", "/ready", "").0, 200);
    let (status, body) = server.send("GET", "/v1/config", "");
    assert_eq!(status, 200, "{body}");
    let config_answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let occurrence = &config_answer["occurrences"][0];
    assert_eq!(occurrence["module_id"], "not-yet", "{body}");
    assert!(occurrence["unavailable"].is_string(), "{body}");
    let (status, body) = server.send("POST", "/v1/process", r#"{"topic": "t", "payload": "x"}"#);
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["result"], "dead_lettered", "{body}");
    assert_eq!(
        answer["message"]["headers"]["etl-dlq-error-kind"], "unavailable",
        "{body}"
    );
    let (status, body) = server.send("POST", "/v1/reload", "");
    assert_eq!(status, 200, "{body}");
    let reload: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reload["result"], "unchanged", "{body}");
    assert!(
        reload["unavailable"].to_string().contains("not-yet"),
        "{body}"
    );
    std::fs::copy(
        fixtures().join("modules/identity.wasm"),
        modules.join("not-yet.wasm"),
    )
    .unwrap();
    let (status, body) = server.send("POST", "/v1/reload", "");
    assert_eq!(status, 200, "{body}");
    let (_, body) = server.send("POST", "/v1/process", r#"{"topic": "t", "payload": "x"}"#);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["result"], "delivered", "{body}");
    server.stop();
}

/// `--no-watch`: a configuration file changed is not read until asked
/// (`POST /v1/reload`); without it, the same change is put in service by
/// itself, `--no-reload-endpoint` or not.
#[test]
fn no_watch_leaves_a_changed_file_unread_until_asked() {
    let identity = "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: identity}]}]\n";
    let changed = "pipeline_id: q\nstages: [{priority: 0, modules: [{module_id: identity}]}]\n";
    let version = |server: &Server| -> u64 {
        let (_, body) = server.send("GET", "/v1/config", "");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["config_version"]
            .as_u64()
            .unwrap()
    };
    let (dir, server) = server_of(identity, &["--no-watch"]);
    std::fs::write(dir.path().join("etl.yaml"), changed).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(version(&server), 1, "{}", server.log());
    assert_eq!(server.send("POST", "/v1/reload", "").0, 200);
    assert_eq!(version(&server), 2);
    server.stop();

    let (dir, server) = server_of(identity, &["--no-reload-endpoint"]);
    std::fs::write(dir.path().join("etl.yaml"), changed).unwrap();
    let started = Instant::now();
    while version(&server) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the change was never read:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
}

/// A second signal during `--shutdown-delay-seconds` ends the process at
/// once (exit 143), without waiting out the delay.
#[test]
fn a_second_signal_during_the_shutdown_delay_ends_the_process_at_once() {
    let (_dir, server) = slow_server(&["--shutdown-delay-seconds", "30"]);
    assert_eq!(server.send("GET", "/health", "").0, 200);
    server.signal("TERM");
    let waited = Instant::now();
    while server.send("GET", "/ready", "").0 != 503 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Instant::now();
    server.signal("TERM");
    let status = server.wait();
    assert_eq!(status.code(), Some(143), "{status:?}\n{}", server.log());
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "it waited out the delay: {:?}",
        signalled.elapsed()
    );
}

/// `--max-connections`: past the limit a new connection waits in the listen
/// queue, unanswered, until one of those open closes; then it is served.
#[test]
fn connections_past_the_limit_wait_until_one_closes() {
    let identity = "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: identity}]}]\n";
    let (_dir, server) = server_of(identity, &["--max-connections", "1", "--no-watch"]);
    // One connection, open and idle after its request.
    let held = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(server.address()).unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
        stream
    };
    std::thread::scope(|scope| {
        let second = scope.spawn(|| server.send("GET", "/health", ""));
        std::thread::sleep(Duration::from_millis(1000));
        assert!(
            !second.is_finished(),
            "a second connection was served while the first was open"
        );
        drop(held);
        assert_eq!(second.join().unwrap().0, 200);
    });
    server.stop();
}
