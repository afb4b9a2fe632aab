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
            ..PoolConfig::default()
        })
        .unwrap(),
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config = if [".json", ".yaml", ".yml"]
        .iter()
        .any(|e| module.ends_with(e))
    {
        Config::load(&root.join(&module))
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    } else {
        stages_of(&module, stages)
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
    let started = std::time::Instant::now();
    for _ in 0..batches {
        let processed = o
            .process_batch_blocking(vec![m.clone(); 64], ProcessOptions::default())
            .unwrap();
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
        started.elapsed() / (batches * 64).max(1) as u32
    );
}

/// `stages` stages of one occurrence of `module` each.
fn stages_of(module: &str, stages: usize) -> Config {
    let mut yaml = String::from("pipeline_id: p\nstages:\n");
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
    Config::from_text(&yaml, Format::Yaml, None).unwrap().config
}
