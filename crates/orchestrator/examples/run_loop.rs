//! Runs batches of 64 messages through a pipeline of `identity` stages (or
//! of another sample module's) in a loop, on a one-thread pool, for counting
//! instructions with callgrind:
//!
//! ```sh
//! cargo build --release -p rustmq-etl-orchestrator --example run_loop
//! valgrind --tool=callgrind target/release/examples/run_loop 3 200   # stages, batches
//! valgrind --tool=callgrind target/release/examples/run_loop 1 200 temperature-converter
//! ```
//!
//! A module other than `identity` gets the throughput bench's 256-byte JSON
//! temperature reading. So does a pipeline file named instead of a module
//! (the number of stages is then the file's):
//!
//! ```sh
//! valgrind --tool=callgrind target/release/examples/run_loop 0 200 fixtures/pipelines/iot-sensor-processing.json
//! ```
//!
//! Two more arguments, with a module: the batch size (default 64) and a
//! number of pipelines to add after the module's, each of two stages of
//! modules whose topic filters the message never matches (a configuration of
//! many pipelines, most of which a message passes through):
//!
//! ```sh
//! valgrind --tool=callgrind target/release/examples/run_loop 1 2000 temperature-converter 1 29
//! ```
//!
//! With `RUN_LOOP_ON_THIS_THREAD=1` in the environment, the batches run on
//! the main thread (`Orchestrator::on_this_thread`), not on the pool's
//! worker: the main thread's count is then the caller's and the engine's.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustmq_etl_config::{Config, Format};
use rustmq_etl_core::Message;
use rustmq_etl_orchestrator::{
    DirectorySource, Disposition, Options, Orchestrator, ProcessOptions,
};
use rustmq_etl_pool::{CompileLimits, Pool, PoolConfig};

#[path = "../benches/support/reading.rs"]
mod reading;
use reading::reading;

fn main() {
    let mut args = std::env::args().skip(1);
    let stages: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let batches: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let module = args.next().unwrap_or_else(|| "identity".to_owned());
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let extra: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let pool = Arc::new(
        Pool::new(PoolConfig {
            workers: 1,
            bulk_bytes_per_ms: Some(1_000_000),
            // Under callgrind a larger module can take longer than the
            // default 10 s to compile.
            compile_limits: CompileLimits {
                compile_timeout: Duration::from_secs(600),
                ..CompileLimits::default()
            },
            caller_threads: 1,
            ..PoolConfig::default()
        })
        .unwrap(),
    );
    let on_this_thread = std::env::var_os("RUN_LOOP_ON_THIS_THREAD").is_some_and(|v| v == "1");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config = if [".json", ".yaml", ".yml"]
        .iter()
        .any(|e| module.ends_with(e))
    {
        assert_eq!(extra, 0, "pipelines are added to a module's pipeline only");
        Config::load(&root.join(&module))
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    } else {
        let mut yaml = format!("pipelines:\n- {}", stages_of(&module, stages));
        for p in 1..=extra {
            yaml.push_str(&passed_over(p));
        }
        Config::from_text(&yaml, Format::Yaml, None)
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    };
    let modules = DirectorySource::new(root.join("fixtures/modules"));
    let o = Orchestrator::new(pool, &config, modules, Options::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let m = if module == "identity" {
        let mut m = Message::new("iot.sensors.temperature", vec![b'x'; 256]);
        m.headers.push("content-type", "application/json");
        m
    } else {
        reading("temperature", "celsius")
    };
    let mut here = on_this_thread.then(|| o.on_this_thread().unwrap());
    let started = std::time::Instant::now();
    for _ in 0..batches {
        let batch = vec![m.clone(); size];
        let processed = match &mut here {
            Some(here) => here.process_batch(batch, ProcessOptions::default()),
            None => o
                .process_batch_blocking(batch, ProcessOptions::default())
                .unwrap(),
        };
        // Counting a module that fails every message would count the wrong work.
        if let Some(p) = processed
            .iter()
            .find(|p| !matches!(p.disposition, Disposition::Delivered(_)))
        {
            panic!("a message was not delivered: {:?}", p.disposition);
        }
        std::hint::black_box(processed);
    }
    eprintln!(
        "{:?} per message",
        started.elapsed() / (batches * size).max(1) as u32
    );
}

/// A pipeline (an entry of a `pipelines` list) of `stages` stages of one
/// occurrence of `module` each.
fn stages_of(module: &str, stages: usize) -> String {
    let mut yaml = String::from("pipeline_id: p\n  stages:\n");
    for s in 0..stages {
        // identity ignores its custom_config: a different one per stage makes
        // each stage its own occurrence. Other modules get none.
        let settings = match module {
            "identity" => format!(", instance_config: {{custom_config: {s}}}"),
            _ => String::new(),
        };
        yaml.push_str(&format!(
            "  - {{priority: {s}, modules: [{{module_id: {module}{settings}}}]}}\n"
        ));
    }
    yaml
}

/// Pipeline `other-{p}`: two stages of sample modules whose filters take
/// topic `other.{p}` only.
fn passed_over(p: usize) -> String {
    let only = format!("topic_filters: [{{filter_type: Exact, pattern: other.{p}}}]");
    format!(
        "- pipeline_id: other-{p}\n  stages:\n  \
         - {{priority: 0, modules: [{{module_id: identity, {only}}}, {{module_id: pressure-normalizer, {only}}}]}}\n  \
         - {{priority: 1, modules: [{{module_id: identity, {only}}}]}}\n"
    )
}
