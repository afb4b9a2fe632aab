//! The embedding program's metrics recorder failing loses no answer: the
//! engine publishes its counters after it has answered a batch, and a panic
//! there is contained (its own test binary: it installs a global recorder).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use rustmq_etl_config::{Config, Format};
use rustmq_etl_core::Message;
use rustmq_etl_orchestrator::{Disposition, Options, Orchestrator, ProcessOptions};
use rustmq_etl_testkit::StandIn;

/// Once armed, panics on every counter registered.
struct Failing;

static ARMED: AtomicBool = AtomicBool::new(false);
static PANICKED: AtomicUsize = AtomicUsize::new(0);

impl Recorder for Failing {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        if ARMED.load(Ordering::SeqCst) {
            PANICKED.fetch_add(1, Ordering::SeqCst);
            panic!("this recorder fails");
        }
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn a_failing_metrics_recorder_loses_no_answer() {
    metrics::set_global_recorder(Failing).unwrap();
    let engine = Arc::new(StandIn::new(2));
    engine.module("m", |_| {
        rustmq_etl_testkit::Behaviour::ok(rustmq_etl_core::Outcome::Unchanged)
    });
    let config = Config::from_text(
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m}]}]",
        Format::Yaml,
        None,
    )
    .unwrap()
    .config;
    let o = Orchestrator::new(
        engine,
        &config,
        |_: &str| Ok(Vec::new()),
        Options::default(),
    )
    .unwrap();
    ARMED.store(true, Ordering::SeqCst);
    // The engine publishes at most every 100 ms, after a batch: batches for
    // longer than that meet the failing recorder.
    for _ in 0..6 {
        let out = o
            .process_batch_blocking(vec![Message::new("t", "x"); 4], ProcessOptions::default())
            .expect("answered");
        assert_eq!(out.len(), 4);
        assert!(out
            .iter()
            .all(|p| matches!(&p.disposition, Disposition::Delivered(m) if m.payload == "x")));
        std::thread::sleep(Duration::from_millis(60));
    }
    assert!(PANICKED.load(Ordering::SeqCst) > 0, "the recorder was met");
    // Reloads meet it too (they count themselves): applied and answered.
    let met = PANICKED.load(Ordering::SeqCst);
    let other = Config::from_text(
        "pipeline_id: p\nmax_retries: 1\nstages: [{priority: 0, modules: [{module_id: m}]}]",
        Format::Yaml,
        None,
    )
    .unwrap()
    .config;
    let report = o.reload(&other).expect("applied");
    assert_eq!((report.changed, report.version), (true, 2));
    assert_eq!(o.set_pipeline_enabled("p", false).unwrap().version, 3);
    o.reload_rejected();
    assert_eq!(o.config_version(), 3);
    assert!(
        PANICKED.load(Ordering::SeqCst) > met,
        "the reloads met the recorder"
    );
}
