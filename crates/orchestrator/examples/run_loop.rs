//! Runs batches of 64 messages through a pipeline of `identity` stages in a
//! loop, on a one-thread pool, for counting instructions with callgrind:
//!
//! ```sh
//! cargo build --release -p rustmq-etl-orchestrator --example run_loop
//! valgrind --tool=callgrind target/release/examples/run_loop 3 200   # stages, batches
//! ```

use std::path::Path;
use std::sync::Arc;

use rustmq_etl_config::{Config, Format};
use rustmq_etl_core::Message;
use rustmq_etl_orchestrator::{DirectorySource, Options, Orchestrator, ProcessOptions};
use rustmq_etl_pool::{Pool, PoolConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let stages: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let batches: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let pool = Arc::new(
        Pool::new(PoolConfig {
            workers: 1,
            bulk_bytes_per_ms: Some(1_000_000),
            ..PoolConfig::default()
        })
        .unwrap(),
    );
    let mut yaml = String::from("pipeline_id: p\nstages:\n");
    for s in 0..stages {
        yaml.push_str(&format!(
            "  - {{priority: {s}, modules: [{{module_id: identity, instance_config: {{custom_config: {s}}}}}]}}\n"
        ));
    }
    let config = Config::from_text(&yaml, Format::Yaml, None).unwrap().config;
    let modules =
        DirectorySource::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/modules"));
    let o = Orchestrator::new(pool, &config, modules, Options::default()).unwrap();
    let mut m = Message::new("iot.sensors.temperature", vec![b'x'; 256]);
    m.headers.push("content-type", "application/json");
    let started = std::time::Instant::now();
    for _ in 0..batches {
        std::hint::black_box(
            o.process_batch_blocking(vec![m.clone(); 64], ProcessOptions::default())
                .unwrap(),
        );
    }
    eprintln!(
        "{:?} per message",
        started.elapsed() / (batches * 64).max(1) as u32
    );
}
