//! The soak: a million messages (or as many as asked) through pipelines that
//! mix the sample modules with every hostile one under every error strategy,
//! four callers keeping both cores busy (two through the engine's threads,
//! two running their batches on their own), while another thread reloads the
//! configuration several times a second: valid and invalid configurations,
//! pipelines disabled and enabled, a module's version swapped.
//!
//! It checks, and exits non-zero if any fails: every input answered exactly
//! once, in its place, with its own key; no benign message lost to an error;
//! every dead letter on the dead-letter topic with all its context headers;
//! every valid reload applied and every invalid one refused; resident memory
//! flat after warm-up (the bound is printed; runs of 100,000 messages or more
//! give it enough readings); no thread left behind; the
//! pool's instance counts balanced at the end; the Prometheus counters equal
//! to the accounting.
//!
//! ```sh
//! cargo xtask soak                      # 1,000,000 messages
//! cargo run --release -p rustmq-etl-orchestrator --example soak -- 200000
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustmq_etl_config::{Config, Format};
use rustmq_etl_core::Message;
use rustmq_etl_orchestrator::{
    Backoff, BreakerSettings, DeadLetterCause, DirectorySource, Disposition, ErrorKind, Options,
    Orchestrator, ProcessOptions,
};
use rustmq_etl_pool::{Pool, PoolConfig};

/// Messages per caller request.
const BATCH: usize = 256;
/// At most one benign message in this many may be dead-lettered because the
/// busy machine stalled past a module's few-ms budget: its instance's start,
/// or the call itself (`hostile-infinite-loop` has 3 ms; budgets are wall
/// clock, so a stall of the machine is charged to the call).
const SLOW_STARTS_PER: usize = 100_000;
/// Resident memory may grow by this much after warm-up: the median of the
/// last third of the readings against the median of the first third.
const RSS_BOUND_MIB: f64 = 64.0;

/// The configuration, in two valid variants (another `instance_config` for
/// `identity`: another occurrence of it) and one that must be refused.
fn config(variant: u32) -> String {
    let identity_timeout = if variant.is_multiple_of(2) { 1000 } else { 900 };
    let refused = if variant == 2 {
        // Validates, but names a module that does not compile.
        "\n          - module_id: broken\n            topic_filters: [{filter_type: Exact, pattern: never}]"
    } else {
        ""
    };
    format!(
        r#"
pipelines:
  - pipeline_id: samples
    error_handling: StopPipeline
    stages:
      - priority: 0
        modules:
          - module_id: sensor-data-validator
            topic_filters: [{{filter_type: Prefix, pattern: "soak.iot."}}]{refused}
      - priority: 1
        parallel_execution: true
        modules:
          - module_id: temperature-converter
            topic_filters: [{{filter_type: Exact, pattern: "soak.iot.temperature"}}]
          - module_id: identity
            instance_config: {{execution_timeout_ms: {identity_timeout}}}
  - pipeline_id: stop
    error_handling: StopPipeline
    stages:
      - priority: 0
        modules:
          - module_id: hostile-trap
            topic_filters: [{{filter_type: Exact, pattern: "soak.hostile.trap"}}]
          - module_id: hostile-out-of-bounds
            topic_filters: [{{filter_type: Exact, pattern: "soak.hostile.oob"}}]
  - pipeline_id: skip
    error_handling: SkipModule
    stages:
      - priority: 0
        parallel_execution: true
        modules:
          - module_id: hostile-oversized-output
            topic_filters: [{{filter_type: Exact, pattern: "soak.hostile.big"}}]
          - module_id: hostile-recursion
            topic_filters: [{{filter_type: Exact, pattern: "soak.hostile.deep"}}]
      - priority: 1
        modules:
          - module_id: identity
            topic_filters: [{{filter_type: Prefix, pattern: "soak.hostile."}}]
  - pipeline_id: retry
    error_handling: RetryWithBackoff
    max_retries: 1
    stages:
      - priority: 0
        modules:
          - module_id: hostile-memory-bomb
            topic_filters: [{{filter_type: Exact, pattern: "soak.hostile.bomb"}}]
            instance_config: {{memory_limit_bytes: 2097152}}
  - pipeline_id: dead
    error_handling: SendToDeadLetter
    global_timeout_ms: 100
    stages:
      - priority: 0
        stage_timeout_ms: 60
        modules:
          - module_id: hostile-infinite-loop
            topic_filters: [{{filter_type: Exact, pattern: "soak.hostile.loop"}}]
            instance_config: {{execution_timeout_ms: 3}}
          - module_id: hostile-slow
            topic_filters: [{{filter_type: Exact, pattern: "soak.hostile.slow"}}]
            instance_config: {{execution_timeout_ms: 40}}
      - priority: 1
        continue_on_error: true
        modules:
          - module_id: hostile-trap
            topic_filters: [{{filter_type: Exact, pattern: "soak.hostile.late-trap"}}]
"#
    )
}

/// Message `i`: mostly sensor readings, the rest aimed at one hostile module
/// each, half of them benign (`ok`) and half not. Returns the message and
/// whether it must not be dead-lettered.
fn message(i: usize) -> (Message, bool) {
    let hostile = [
        ("trap", 20),
        ("oob", 20),
        ("big", 20),
        ("deep", 20),
        ("bomb", 20),
        ("late-trap", 20),
        ("loop", 2),
        ("slow", 2),
    ];
    let slot = i % 1000;
    let mut at = 0;
    for (name, per_mille) in hostile {
        if slot >= at && slot < at + per_mille {
            let benign = (i / 1000).is_multiple_of(2);
            let payload = match (benign, name) {
                (true, "slow") => "1",
                (false, "slow") => "100000",
                (true, _) => "ok",
                (false, _) => "boom",
            };
            let mut m = Message::new(format!("soak.hostile.{name}"), payload);
            m.key = Some(format!("m{i}").into());
            return (m, benign);
        }
        at += per_mille;
    }
    let (topic, payload) = if i.is_multiple_of(2) {
        (
            "soak.iot.temperature",
            format!(
                r#"{{"sensor_id":"s{}","sensor_type":"temperature","value":{}.5,"unit":"celsius","location":"room-{}"}}"#,
                i % 97,
                i % 40,
                i % 13
            ),
        )
    } else {
        (
            "soak.iot.pressure",
            format!(
                r#"{{"sensor_id":"p{}","sensor_type":"pressure","value":{},"unit":"hPa"}}"#,
                i % 89,
                900 + i % 200
            ),
        )
    };
    let mut m = Message::new(topic, payload);
    m.key = Some(format!("m{i}").into());
    (m, true)
}

/// The median of `values` (not empty).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Writes `identity.wasm` again with a custom section naming `generation`:
/// the same behaviour, other bytes, so a new version.
fn swap_identity(dir: &Path, original: &[u8], generation: u32) {
    let name = b"soak-generation";
    let payload = generation.to_le_bytes();
    let mut section = vec![0u8];
    let body_len = 1 + name.len() + payload.len();
    section.push(body_len as u8);
    section.push(name.len() as u8);
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut bytes = original.to_vec();
    bytes.extend_from_slice(&section);
    let tmp = dir.join("identity.wasm.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(tmp, dir.join("identity.wasm")).unwrap();
}

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("a Prometheus recorder");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // The modules in a directory of the soak's own, where identity is swapped.
    let modules: PathBuf =
        std::env::temp_dir().join(format!("rustmq-etl-soak-{}", std::process::id()));
    std::fs::create_dir_all(&modules).unwrap();
    for entry in std::fs::read_dir(root.join("fixtures/modules")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), modules.join(entry.file_name())).unwrap();
    }
    std::fs::write(
        modules.join("broken.wasm"),
        b"\0asm\x01\0\0\0\x05\x03broken",
    )
    .unwrap();
    let identity = std::fs::read(modules.join("identity.wasm")).unwrap();

    let pool = Arc::new(
        Pool::new(PoolConfig {
            caller_threads: 2,
            ..PoolConfig::default()
        })
        .unwrap(),
    );
    let parse = |text: &str| Config::from_text(text, Format::Yaml, None).unwrap().config;
    let options = Options::default()
        .backoff(
            Backoff::default()
                .base(Duration::from_millis(1))
                .factor(2)
                .cap(Duration::from_millis(4)),
        )
        .breaker(
            BreakerSettings::default()
                .failures(5)
                .cool_down(Duration::from_millis(50)),
        );
    let etl = Orchestrator::new(
        pool.clone(),
        &parse(&config(0)),
        DirectorySource::new(&modules),
        options,
    )
    .expect("the soak's configuration loads");
    let dead_letter_topic = etl.options().dead_letter_topic.clone();

    println!(
        "soak: {total} messages, 4 callers (2 of them running their batches on their own threads), batches of {BATCH}, reloads every 100 ms"
    );
    let seen: Vec<AtomicU8> = (0..total).map(|_| AtomicU8::new(0)).collect();
    let failures: Mutex<Vec<String>> = Mutex::default();
    let fail = |text: String| {
        let mut f = failures.lock().unwrap();
        if f.len() < 20 {
            f.push(text);
        }
    };
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let finished = AtomicBool::new(false);
    let counts: Mutex<BTreeMap<&'static str, u64>> = Mutex::default();
    let reloads: Mutex<BTreeMap<&'static str, u64>> = Mutex::default();
    let dead_by: Mutex<BTreeMap<String, u64>> = Mutex::default();
    // Benign messages dead-lettered because their instance's start ran past
    // the module's budget: the machine's doing (a start is timed by the wall
    // clock, and the soak's budgets are a few ms), tolerated up to
    // `SLOW_STARTS_PER` (docs/reliability.md).
    let slow_starts: Mutex<Vec<String>> = Mutex::default();
    let mut memory: Vec<(usize, f64)> = Vec::new();
    let started = Instant::now();
    let threads_before = threads();

    std::thread::scope(|scope| {
        // The reloader.
        scope.spawn(|| {
            let mut step = 0u32;
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let reload_started = Instant::now();
                let (what, result, must_apply) = match step % 6 {
                    0 => ("variant", etl.reload(&parse(&config(1))), true),
                    1 => ("invalid", etl.reload(&parse(&config(2))), false),
                    2 => ("disable", etl.set_pipeline_enabled("skip", false), true),
                    3 => ("enable", etl.set_pipeline_enabled("skip", true), true),
                    4 => {
                        swap_identity(&modules, &identity, step);
                        ("module swap", etl.reload_modules(), true)
                    }
                    _ => ("variant", etl.reload(&parse(&config(0))), true),
                };
                let took = reload_started.elapsed();
                if took > Duration::from_secs(1) {
                    println!("  reload {what} took {took:.1?}");
                }
                let outcome = match (&result, must_apply) {
                    (Ok(_), true) | (Err(_), false) => "as expected",
                    _ => "WRONG",
                };
                if outcome == "WRONG" {
                    fail(format!("reload {what}: {result:?}"));
                }
                *reloads.lock().unwrap().entry(what).or_default() += 1;
                step += 1;
            }
        });
        // The callers: two through the engine's threads, two running their
        // batches on their own threads.
        for caller in 0..4 {
            let (etl, next, fail, done) = (&etl, &next, &fail, &done);
            let (seen, counts, dead_by) = (&seen, &counts, &dead_by);
            let (slow_starts, dead_letter_topic) = (&slow_starts, dead_letter_topic.as_str());
            scope.spawn(move || {
                let mut here = (caller >= 2).then(|| etl.on_this_thread().unwrap());
                loop {
                let from = next.fetch_add(BATCH, Ordering::Relaxed);
                if from >= total {
                    break;
                }
                let to = (from + BATCH).min(total);
                let inputs: Vec<(Message, bool)> = (from..to).map(message).collect();
                let batch: Vec<Message> = inputs.iter().map(|(m, _)| m.clone()).collect();
                let answers = match &mut here {
                    Some(here) => Ok(here.process_batch(batch, ProcessOptions::default())),
                    None => etl.process_batch_blocking(batch, ProcessOptions::default()),
                };
                let answers = match answers {
                    Ok(answers) => answers,
                    Err(e) => {
                        fail(format!("batch at {from}: {e:?}"));
                        break;
                    }
                };
                if answers.len() != inputs.len() {
                    fail(format!(
                        "batch at {from}: {} answers to {} messages",
                        answers.len(),
                        inputs.len()
                    ));
                }
                let mut local: BTreeMap<&'static str, u64> = BTreeMap::new();
                let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
                for (i, ((input, benign), processed)) in (from..to).zip(inputs.iter().zip(&answers))
                {
                    let code = match &processed.disposition {
                        Disposition::Delivered(m) => {
                            if m.key != input.key {
                                fail(format!("message {i}: delivered with key {:?}", m.key));
                            }
                            1
                        }
                        Disposition::Dropped => 2,
                        Disposition::DeadLettered(m) => {
                            if m.key != input.key || m.topic != dead_letter_topic {
                                fail(format!(
                                    "message {i}: dead letter {:?} on {}",
                                    m.key, m.topic
                                ));
                            }
                            // Its cause, whole: a module of a pipeline's
                            // stage, and how many calls.
                            match DeadLetterCause::of(m) {
                                Err(e) => fail(format!(
                                    "message {i}: dead letter without its cause: {e}"
                                )),
                                Ok(cause) => {
                                    if cause.pipeline.is_none()
                                        || cause.stage.is_none()
                                        || cause.module.is_none()
                                        || cause.attempts.is_none()
                                    {
                                        fail(format!(
                                            "message {i}: dead letter's cause lacks its place: {cause:?}"
                                        ));
                                    }
                                    // A benign message fails only where the
                                    // module's breaker is open (opened by the
                                    // hostile ones), or, now and then, where
                                    // the machine stalled past a few-ms
                                    // budget (its instance's start, or the
                                    // call: see SLOW_STARTS_PER).
                                    let slow_start = cause.kind == ErrorKind::Timeout;
                                    if *benign && slow_start {
                                        slow_starts.lock().unwrap().push(format!(
                                            "message {i} ({}): {cause}",
                                            input.topic
                                        ));
                                    } else if *benign && cause.kind != ErrorKind::CircuitOpen {
                                        fail(format!(
                                            "message {i} ({}) dead-lettered: {cause}",
                                            input.topic
                                        ));
                                    }
                                    let module = cause.module.as_deref().unwrap_or("?");
                                    *kinds
                                        .entry(format!("{module} {}", cause.kind))
                                        .or_default() += 1;
                                }
                            }
                            3
                        }
                    };
                    if seen[i].swap(code, Ordering::Relaxed) != 0 {
                        fail(format!("message {i} answered twice"));
                    }
                    *local.entry(processed.disposition.as_str()).or_default() += 1;
                }
                let mut counts = counts.lock().unwrap();
                for (k, n) in local {
                    *counts.entry(k).or_default() += n;
                }
                drop(counts);
                let mut dead_by = dead_by.lock().unwrap();
                for (k, n) in kinds {
                    *dead_by.entry(k).or_default() += n;
                }
                done.fetch_add(to - from, Ordering::Relaxed);
                }
            });
        }
        // The memory curve: a reading every fortieth of the run (looked for
        // every 10 ms), printed every tenth.
        let (mut mark, mut printed) = (0, 0);
        while done.load(Ordering::Relaxed) < total && failures.lock().unwrap().len() < 20 {
            std::thread::sleep(Duration::from_millis(10));
            let now = done.load(Ordering::Relaxed);
            if now >= mark {
                let resident = rss_mib();
                memory.push((now, resident));
                if now >= printed {
                    println!(
                        "  {now:>9} messages  {resident:>7.1} MiB resident  {:>6.1?}",
                        started.elapsed()
                    );
                    printed = now + total / 10;
                }
                mark = now + (total / 40).max(1);
            }
        }
        finished.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed();

    let counts = counts.into_inner().unwrap();
    let get = |k: &str| counts.get(k).copied().unwrap_or(0);
    let (delivered, dropped, dead) = (get("delivered"), get("dropped"), get("dead_lettered"));
    println!(
        "{total} in = {delivered} delivered + {dropped} dropped + {dead} dead-lettered in {elapsed:.1?} ({:.0} messages/s)",
        total as f64 / elapsed.as_secs_f64()
    );
    println!("reloads: {:?}", reloads.lock().unwrap());
    println!(
        "dead letters by module and kind: {:?}",
        dead_by.lock().unwrap()
    );
    let slow_starts = slow_starts.into_inner().unwrap();
    println!(
        "benign messages dead-lettered by a stall past a few-ms budget: {}{}",
        slow_starts.len(),
        slow_starts
            .iter()
            .map(|s| format!("\n  {s}"))
            .collect::<String>()
    );
    if slow_starts.len() > total / SLOW_STARTS_PER {
        fail(format!(
            "{} benign messages dead-lettered by a stall past a few-ms budget: more than one in {SLOW_STARTS_PER}",
            slow_starts.len()
        ));
    }
    let unanswered = seen
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) == 0)
        .count();
    if unanswered > 0 || delivered + dropped + dead != total as u64 {
        fail(format!("{unanswered} messages unanswered"));
    }

    // Memory after warm-up (the first tenth): no upward trend. Readings
    // move by tens of MiB with what is in flight (a memory bomb's instance,
    // a 2 MiB answer), so the trend is the median of the last third of them
    // against the median of the first third; the range is printed too.
    let after_warm_up: Vec<f64> = memory
        .iter()
        .filter(|(n, _)| *n >= total / 10)
        .map(|(_, m)| *m)
        .collect();
    if after_warm_up.len() < 6 {
        fail(format!(
            "only {} readings of resident memory after warm-up (at least 6 are needed): run more messages (100,000 or more)",
            after_warm_up.len()
        ));
    } else {
        let (low, high) = after_warm_up
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), m| (l.min(*m), h.max(*m)));
        let third = after_warm_up.len() / 3;
        let first = median(&after_warm_up[..third]);
        let last = median(&after_warm_up[after_warm_up.len() - third..]);
        println!(
            "resident after warm-up: {low:.1} to {high:.1} MiB in {} readings; median {first:.1} MiB in the first third, {last:.1} MiB in the last (bound: at most {RSS_BOUND_MIB} MiB more)",
            after_warm_up.len()
        );
        if last - first > RSS_BOUND_MIB {
            fail(format!(
                "resident memory grew by {:.1} MiB after warm-up (median of the last third against the first)",
                last - first
            ));
        }
    }

    // Let the workers' cleaners drop retired versions' instances, then count.
    std::thread::sleep(Duration::from_millis(2500));
    etl.publish_metrics();
    pool.publish_metrics();
    let text = prometheus.render();
    let metric = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    for (result, n) in [
        ("delivered", delivered),
        ("dropped", dropped),
        ("dead_lettered", dead),
    ] {
        let m = metric(&format!("rustmq_etl_messages_total{{result=\"{result}\"}}"));
        if m != n as f64 {
            fail(format!(
                "rustmq_etl_messages_total{{result={result}}} is {m}, the accounting says {n}"
            ));
        }
    }
    let mut pool_lines = Vec::new();
    // Each occurrence's label set (`module`, and `settings` unless its
    // settings are the defaults), as its series print it.
    let mut occurrences: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("rustmq_etl_pool_instances_created_total{"))
        .filter_map(|l| l.split_once('}').map(|(labels, _)| labels.to_owned()))
        .collect();
    occurrences.sort();
    occurrences.dedup();
    if occurrences.is_empty() {
        fail("no pool statistics were published".to_owned());
    }
    for labels in occurrences {
        let m = |name: &str| {
            let series = format!("{name}{{{labels}}} ");
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .and_then(|v| v.parse::<f64>().ok());
            value.unwrap_or_else(|| {
                fail(format!("{series}is missing"));
                f64::NAN
            })
        };
        let created = m("rustmq_etl_pool_instances_created_total");
        let evicted = m("rustmq_etl_pool_instances_evicted_total");
        let discarded = m("rustmq_etl_pool_instances_discarded_total");
        let idle = m("rustmq_etl_pool_instances_idle");
        let in_use = m("rustmq_etl_pool_instances_in_use");
        pool_lines.push(format!(
            "  {labels:<50} created {created:>7} = evicted {evicted:>6} + discarded {discarded:>7} + idle {idle:>3} + in use {in_use}"
        ));
        if created != evicted + discarded + idle || in_use != 0.0 {
            fail(format!("pool statistics of {{{labels}}} do not balance"));
        }
    }
    println!("pool instances, per module occurrence:");
    for line in pool_lines {
        println!("{line}");
    }
    drop(etl);
    drop(pool);
    std::thread::sleep(Duration::from_millis(500));
    let threads_after = threads();
    println!("threads: {threads_before} while running, {threads_after} after the orchestrator and pool were dropped");
    if threads_after > threads_before {
        fail(format!("threads left: {threads_after} > {threads_before}"));
    }
    let _ = std::fs::remove_dir_all(&modules);

    let failures = failures.into_inner().unwrap();
    if failures.is_empty() {
        println!("soak passed");
    } else {
        for f in &failures {
            println!("FAILED: {f}");
        }
        std::process::exit(1);
    }
}
