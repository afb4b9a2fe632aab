//! design.md's two example pipelines end to end, with the real sample modules
//! on the real wasmer pool; the strategies and timeouts once more with the
//! real hostile modules; a mixed run whose accounting and metrics agree; and
//! reloads while messages flow.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustmq_etl_config::{Config, Format};
use rustmq_etl_core::Message;
use rustmq_etl_orchestrator::{
    dead_letter_headers as dlq, DirectorySource, Disposition, LoadStep, ModuleSource, Options,
    Orchestrator, ProcessOptions, Processed, TraceEvent,
};
use rustmq_etl_pool::{Pool, PoolConfig};

fn root() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo")).join("../..")
}

/// One pool for the file: calibrating and starting workers once.
fn pool() -> Arc<Pool> {
    static POOL: OnceLock<Arc<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        Arc::new(
            Pool::new(PoolConfig {
                workers: 2,
                // Tests that run on their own thread, at the same time.
                caller_threads: 4,
                ..PoolConfig::default()
            })
            .unwrap(),
        )
    })
    .clone()
}

fn modules() -> DirectorySource {
    DirectorySource::new(root().join("fixtures/modules"))
}

fn design_examples() -> Orchestrator<Pool> {
    let config = Config::load(&root().join("fixtures/pipelines"))
        .unwrap()
        .config;
    Orchestrator::new(pool(), &config, modules(), Options::default()).unwrap()
}

fn from_yaml(yaml: &str) -> Orchestrator<Pool> {
    let config = Config::from_text(yaml, Format::Yaml, None)
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    Orchestrator::new(pool(), &config, modules(), Options::default()).unwrap()
}

fn sample_messages() -> Vec<Message> {
    std::fs::read_to_string(root().join("fixtures/messages/sample.jsonl"))
        .unwrap()
        .lines()
        .map(|l| Message::from_json_line(l).unwrap())
        .collect()
}

fn run(o: &Orchestrator<Pool>, messages: Vec<Message>) -> Vec<Processed> {
    o.process_batch_blocking(messages, ProcessOptions::default().trace(true))
        .unwrap()
}

fn delivered(p: &Processed) -> &Message {
    match &p.disposition {
        Disposition::Delivered(m) => m,
        other => panic!("expected delivery, got {other:?}\ntrace: {:#?}", p.trace),
    }
}

fn ran(p: &Processed) -> Vec<String> {
    p.trace
        .as_ref()
        .unwrap()
        .entries
        .iter()
        .filter(|e| matches!(e.event, TraceEvent::Ran { .. }))
        .map(|e| e.module.clone())
        .collect()
}

#[test]
fn design_md_examples_transform_the_sample_messages() {
    let o = design_examples();
    let input = sample_messages();
    let out = run(&o, input.clone());
    assert_eq!(out.len(), 5);

    // iot.sensors.temperature: validated, then converted to Fahrenheit.
    let m = delivered(&out[0]);
    assert_eq!(
        ran(&out[0]),
        ["sensor-data-validator", "temperature-converter"]
    );
    assert_eq!(m.topic, "iot.sensors.temperature");
    assert_eq!(m.key, input[0].key);
    assert_eq!(m.timestamp_ms, Some(1764201600000));
    assert_eq!(
        m.headers.iter().collect::<Vec<_>>(),
        [
            ("content-type", "application/json"),
            ("x-sensor-valid", "true")
        ]
    );
    assert_eq!(
        &m.payload[..],
        br#"{"sensor_type":"temperature","unit":"fahrenheit","reading":70.7}"#
    );

    // iot.sensors.pressure: not a temperature, so not validated; normalized
    // to hPa (already hPa: the same reading, rewritten).
    let m = delivered(&out[1]);
    assert_eq!(ran(&out[1]), ["pressure-normalizer"]);
    assert_eq!(
        &m.payload[..],
        br#"{"sensor_type":"pressure","unit":"hPa","reading":1013.2}"#
    );
    assert!(m.headers.is_empty());

    // events.web.content with JSON and a client IP: validated, enriched,
    // analysed; not formatted (the formatter's Exact "*" matches only "*").
    let m = delivered(&out[2]);
    assert_eq!(
        ran(&out[2]),
        [
            "message-validator",
            "geolocation-enricher",
            "content-analyzer"
        ]
    );
    assert_eq!(m.headers.get("x-validation"), Some("passed"));
    assert_eq!(m.headers.get("geo-country"), Some("unknown"));
    assert_eq!(m.headers.get("content-kind"), Some("json"));
    assert_eq!(m.payload, input[2].payload);

    // logs.mobile.app: enriched only (no JSON content type, no .content).
    let m = delivered(&out[3]);
    assert_eq!(ran(&out[3]), ["geolocation-enricher"]);
    assert_eq!(m.headers.get("geo-country"), Some("unknown"));
    assert_eq!(&m.payload[..], b"plain text log line");

    // The topic literally named "*": only the formatter, which leaves
    // non-JSON bytes alone.
    let m = delivered(&out[4]);
    assert_eq!(ran(&out[4]), ["message-formatter"]);
    assert_eq!(&m.payload[..], &[0, 1, 2, 3]);
}

const HOSTILE: &str = r#"
pipelines:
  - pipeline_id: looping
    error_handling: SendToDeadLetter
    stages:
      - priority: 0
        modules:
          - module_id: hostile-infinite-loop
            instance_config: {execution_timeout_ms: 50}
            topic_filters: [{filter_type: Exact, pattern: loop}]
  - pipeline_id: bombing
    error_handling: StopPipeline
    stages:
      - priority: 0
        modules:
          - module_id: hostile-memory-bomb
            instance_config: {memory_limit_bytes: 16777216}
            topic_filters: [{filter_type: Exact, pattern: bomb}]
  - pipeline_id: trapping
    error_handling: RetryWithBackoff
    max_retries: 2
    stages:
      - priority: 0
        modules:
          - module_id: hostile-trap
            topic_filters: [{filter_type: Exact, pattern: trap}]
  - pipeline_id: lying
    error_handling: SkipModule
    stages:
      - priority: 0
        modules:
          - module_id: hostile-out-of-bounds
            topic_filters: [{filter_type: Exact, pattern: lie}]
          - module_id: message-formatter
            topic_filters: [{filter_type: Exact, pattern: lie}]
  - pipeline_id: slow
    error_handling: SendToDeadLetter
    stages:
      - priority: 0
        stage_timeout_ms: 30
        modules:
          - module_id: hostile-slow
            topic_filters: [{filter_type: Exact, pattern: slow}]
"#;

/// design.md's examples give the same results on the caller's own thread
/// (`OnThisThread`, the modules' instances of that thread) as through the
/// engine's threads.
#[test]
fn design_md_examples_give_the_same_results_on_the_callers_thread() {
    let o = design_examples();
    let messages = sample_messages();
    let through_the_engine: Vec<Disposition> = run(&o, messages.clone())
        .into_iter()
        .map(|p| p.disposition)
        .collect();
    let mut here = o.on_this_thread().unwrap();
    for _ in 0..2 {
        // Twice: the thread's instances are made, then reused.
        let on_this_thread: Vec<Disposition> = here
            .process_batch(messages.clone(), ProcessOptions::default())
            .into_iter()
            .map(|p| p.disposition)
            .collect();
        assert_eq!(on_this_thread, through_the_engine);
    }
}

#[test]
fn hostile_modules_meet_every_strategy_and_timeout() {
    let o = from_yaml(HOSTILE);
    let attack = |topic: &str, payload: &str| Message::new(topic, payload.to_owned());
    let out = run(
        &o,
        vec![
            attack("loop", "attack"),
            attack("bomb", "attack"),
            attack("trap", "attack"),
            attack("lie", "attack"),
            attack("slow", "5000"),
        ],
    );
    let letter = |p: &Processed| match &p.disposition {
        Disposition::DeadLettered(m) => m.clone(),
        other => panic!("expected a dead letter, got {other:?}"),
    };
    // A loop stopped at its 50 ms budget: `timeout`, dead-lettered.
    let m = letter(&out[0]);
    assert_eq!(
        (m.headers.get(dlq::ERROR_KIND), m.headers.get(dlq::MODULE)),
        (Some("timeout"), Some("hostile-infinite-loop"))
    );
    // A memory bomb under StopPipeline: the message goes on as it entered.
    assert_eq!(delivered(&out[1]), &attack("bomb", "attack"));
    // A trap retried twice, then dead-lettered with three attempts.
    let m = letter(&out[2]);
    assert_eq!(
        (m.headers.get(dlq::ERROR_KIND), m.headers.get(dlq::ATTEMPTS)),
        (Some("trap"), Some("3"))
    );
    // An answer out of bounds, skipped; the next module still ran.
    assert_eq!(ran(&out[3]), ["message-formatter"]);
    // A slow module stopped by its stage's 30 ms budget.
    assert_eq!(
        letter(&out[4]).headers.get(dlq::ERROR_KIND),
        Some("stage_timeout")
    );
}

/// A parallel stage with the real modules: the trap declared first makes the
/// dead letter, and the formatter declared after it still runs (every module
/// of a parallel stage runs before a failure is acted on).
#[test]
fn a_trap_in_a_parallel_stage_is_acted_on_after_every_module_ran() {
    let o = from_yaml(
        r#"
pipeline_id: parallel
error_handling: SendToDeadLetter
stages:
  - priority: 4
    parallel_execution: true
    modules: [{module_id: hostile-trap}, {module_id: message-formatter}]
"#,
    );
    let input = Message::new("events.web.click", r#"{"user":"u-1"}"#);
    let out = run(&o, vec![input.clone()]);
    assert_eq!(ran(&out[0]), ["message-formatter"]);
    let Disposition::DeadLettered(letter) = &out[0].disposition else {
        panic!("{:?}", out[0].disposition)
    };
    assert_eq!(letter.payload, input.payload);
    assert_eq!(letter.headers.get(dlq::MODULE), Some("hostile-trap"));
    assert_eq!(letter.headers.get(dlq::ERROR_KIND), Some("trap"));
    assert_eq!(letter.headers.get(dlq::STAGE), Some("4"));
}

/// Every input accounted for exactly once, and the metrics say the same.
#[test]
fn a_mixed_run_accounts_for_every_message_and_the_metrics_agree() {
    // Breakers that do not open, so that every failure is the module's own.
    let options = Options::default()
        .breaker(rustmq_etl_orchestrator::BreakerSettings::default().failures(1000));
    // The pool's series are the process's, summed over every pool with the
    // same labels: the loop's own budget gives its series a label no other
    // test uses, so that its counts are this run's alone.
    let hostile = HOSTILE.replace("execution_timeout_ms: 50", "execution_timeout_ms: 51");
    let config = Config::from_text(&hostile, Format::Yaml, None)
        .unwrap()
        .config;
    let o = Orchestrator::new(pool(), &config, modules(), options).unwrap();
    let topics = ["loop", "bomb", "trap", "lie", "other", "other", "other"];
    let input: Vec<Message> = (0..70)
        .map(|i| Message::new(topics[i % topics.len()], "attack"))
        .collect();
    let out = o
        .process_batch_blocking(input.clone(), ProcessOptions::default())
        .unwrap();
    assert_eq!(out.len(), input.len());
    let (mut delivered_n, mut dropped_n, mut dead_n) = (0, 0, 0);
    for (i, p) in out.iter().enumerate() {
        match (&p.disposition, topics[i % topics.len()]) {
            (Disposition::DeadLettered(m), "loop" | "trap") => {
                assert_eq!(
                    m.headers.get(dlq::ORIGINAL_TOPIC),
                    Some(input[i].topic.as_str())
                );
                dead_n += 1;
            }
            (Disposition::Delivered(_), "bomb" | "lie" | "other") => delivered_n += 1,
            (Disposition::Dropped, _) => dropped_n += 1,
            other => panic!("message {i}: {other:?}"),
        }
    }
    assert_eq!(delivered_n + dropped_n + dead_n, input.len());
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || o.publish_metrics());
    let text = handle.render();
    let value = |series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
    };
    assert_eq!(
        value(r#"rustmq_etl_messages_total{result="delivered"}"#),
        delivered_n as u64
    );
    assert_eq!(
        value(r#"rustmq_etl_messages_total{result="dead_lettered"}"#),
        dead_n as u64
    );
    assert_eq!(
        value(
            r#"rustmq_etl_dead_letters_total{pipeline="trapping",module="hostile-trap",kind="trap"}"#
        ),
        10
    );
    assert_eq!(
        value(r#"rustmq_etl_module_retries_total{pipeline="trapping",module="hostile-trap"}"#),
        20
    );
    // Each of the 30 calls failed: every one an error, retried or not.
    for series in [
        r#"rustmq_etl_module_errors_total{pipeline="trapping",module="hostile-trap",kind="trap"}"#,
        r#"rustmq_etl_module_calls_total{pipeline="trapping",module="hostile-trap",outcome="failed"}"#,
    ] {
        assert_eq!(value(series), 30, "{series}");
    }
    // `hostile-infinite-loop` has settings of its own: a `settings` label.
    let looping = rustmq_etl_core::ModuleSettings::default()
        .execution_timeout_ms(51)
        .label()
        .unwrap();
    assert_eq!(
        value(&format!(
            r#"rustmq_etl_module_errors_total{{pipeline="looping",module="hostile-infinite-loop",settings="{looping}",kind="timeout"}}"#
        )),
        10
    );
    // The pool labels the occurrence alike: its timeouts, seen from inside.
    assert_eq!(
        value(&format!(
            r#"rustmq_etl_pool_failures_total{{module="hostile-infinite-loop",settings="{looping}",kind="timeout"}}"#
        )),
        10
    );
    // Every kind a call can fail with is there from the first scrape, at 0
    // when it never happened (a breaker's refusal is not the pool's).
    assert_eq!(
        value(&format!(
            r#"rustmq_etl_pool_failures_total{{module="hostile-infinite-loop",settings="{looping}",kind="trap"}}"#
        )),
        0
    );
    assert!(!text
        .contains(r#"rustmq_etl_pool_failures_total{module="hostile-trap",kind="circuit_open"}"#));
    assert_eq!(
        value(&format!(
            r#"rustmq_etl_module_errors_total{{pipeline="looping",module="hostile-infinite-loop",settings="{looping}",kind="memory_limit"}}"#
        )),
        0
    );
    assert!(
        text.contains(&format!(
            r#"rustmq_etl_circuit_state{{module="hostile-infinite-loop",settings="{looping}"}}"#
        )),
        "{text}"
    );
    assert_eq!(
        value(r#"rustmq_etl_pipeline_messages_total{pipeline="bombing",result="stopped"}"#),
        10
    );
    assert!(text.contains("rustmq_etl_module_duration_seconds_count{pipeline=\"lying\",module=\"message-formatter\"} 10"), "{text}");
    assert!(text.contains("rustmq_etl_stage_duration_seconds"), "{text}");
    assert!(
        text.contains("rustmq_etl_selection_duration_seconds"),
        "{text}"
    );
    assert!(
        text.contains(r#"rustmq_etl_circuit_state{module="hostile-trap"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"rustmq_etl_pool_instances_created_total{module="hostile-trap"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"rustmq_etl_pool_instances_discarded_total{module="hostile-trap"}"#),
        "{text}"
    );
}

/// Reloads, module swaps and a pipeline switched off and on while messages
/// flow: no message fails, and each ran on one whole configuration.
#[test]
fn reloads_while_messages_flow_lose_nothing_and_never_mix_configurations() {
    let yaml = |formatter_first: bool| {
        let (a, b) = if formatter_first {
            ("message-formatter", "content-analyzer")
        } else {
            ("content-analyzer", "message-formatter")
        };
        format!(
            "pipeline_id: p\nstages:\n  - {{priority: 0, modules: [{{module_id: {a}}}]}}\n  - {{priority: 1, modules: [{{module_id: {b}}}]}}"
        )
    };
    let config = |text: &str| Config::from_text(text, Format::Yaml, None).unwrap().config;
    let o = Orchestrator::new(pool(), &config(&yaml(true)), modules(), Options::default()).unwrap();
    std::thread::scope(|scope| {
        let senders: Vec<_> = (0..3)
            .map(|_| {
                let o = o.clone();
                scope.spawn(move || {
                    let mut all = Vec::new();
                    for _ in 0..30 {
                        let batch = vec![Message::new("t", "{ \"a\" : 1 }"); 8];
                        all.extend(
                            o.process_batch_blocking(batch, ProcessOptions::default().trace(true))
                                .unwrap(),
                        );
                    }
                    all
                })
            })
            .collect();
        for i in 0..8 {
            o.reload(&config(&yaml(i % 2 == 1))).unwrap();
            if i == 3 {
                o.set_pipeline_enabled("p", false).unwrap();
                o.set_pipeline_enabled("p", true).unwrap();
            }
            // A broken configuration (a module whose init rejects its
            // settings) is refused while messages flow.
            assert!(o.reload(&config("pipeline_id: q\nstages: [{priority: 0, modules: [{module_id: message-formatter, instance_config: {custom_config: {pretty: \"yes\"}}}]}]")).is_err());
            std::thread::sleep(Duration::from_millis(10));
        }
        for sender in senders {
            for p in sender.join().unwrap() {
                let m = delivered(&p);
                let order = ran(&p);
                // Either order, whole, or (switched off) nothing.
                assert!(
                    order == ["message-formatter", "content-analyzer"]
                        || order == ["content-analyzer", "message-formatter"]
                        || order.is_empty(),
                    "{order:?}"
                );
                if !order.is_empty() {
                    assert_eq!(&m.payload[..], br#"{"a":1}"#);
                    assert_eq!(m.headers.get("content-kind"), Some("json"));
                }
            }
        }
    });
}

/// A configuration that cannot be put in service says, for each module, the
/// step it failed at: its bytes could not be read, are not a module, or the
/// module would not start (its init rejected its `custom_config`).
#[test]
fn a_rejected_configuration_names_the_step_each_module_failed_at() {
    let source = |id: &str| match id {
        "not-there" => Err("no such file".to_owned()),
        "not-wasm" => Ok(b"this is not WebAssembly".to_vec()),
        other => modules().read(other),
    };
    let config = |yaml: &str| {
        Config::from_text(yaml, Format::Yaml, None)
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    };
    let o = Orchestrator::new(
        pool(),
        &config("pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: identity}]}]"),
        source,
        Options::default(),
    )
    .unwrap();
    let bad = config(
        r#"
pipeline_id: p
stages:
  - priority: 0
    modules:
      - module_id: not-there
      - module_id: not-wasm
      - module_id: message-formatter
        instance_config: {custom_config: {pretty: "yes"}}
"#,
    );
    let err = o.reload(&bad).unwrap_err();
    let mut steps: Vec<(String, LoadStep)> = err
        .errors
        .iter()
        .map(|e| (e.module().to_owned(), e.step()))
        .collect();
    steps.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        steps,
        [
            ("message-formatter".to_owned(), LoadStep::Start),
            ("not-there".to_owned(), LoadStep::Read),
            ("not-wasm".to_owned(), LoadStep::Compile),
        ],
        "{err}"
    );
    assert_eq!(o.config_version(), 1, "the old configuration keeps serving");
}
