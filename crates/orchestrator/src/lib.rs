//! The orchestrator: the crate a broker depends on.
//!
//! An [`Orchestrator`] runs messages through the configured pipelines on an
//! engine (the wasmer pool, or any `rustmq_etl_core::Engine`): async
//! [`Orchestrator::process`] and [`Orchestrator::process_batch`], a non-blocking
//! [`Orchestrator::try_process_batch`] and [`Orchestrator::process_batch_blocking`]
//! for callers without a runtime, and [`Orchestrator::on_this_thread`] for a
//! caller that would rather run the modules on its own thread than wait on
//! it; every message of a call that answers ends in one [`Processed`]
//! (delivered, dropped or dead-lettered, with an optional [`Trace`]); a call
//! that fails with [`EngineStopped`] answers only for its first messages.
//! [`Orchestrator::reload`] swaps configuration and modules together;
//! [`Orchestrator::drain`] waits for the messages in flight before a stop. The
//! user guide is `docs/execution.md`.
//!
//! A broker's whole use of it, on the shipped `legacy-uppercase` module:
//!
//! ```
//! use std::sync::Arc;
//! use rustmq_etl_orchestrator::{
//!     Config, DeadLetterCause, DirectorySource, Disposition, Format, Message, Options, Orchestrator,
//!     ProcessOptions,
//! };
//! use rustmq_etl_pool::{Pool, PoolConfig};
//!
//! # let modules = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/modules");
//! // Usually `Config::load(path)`: a file or a directory of YAML or JSON.
//! let yaml = r#"
//! pipeline_id: shout
//! stages:
//!   - priority: 0
//!     modules:
//!       - module_id: legacy-uppercase
//!         topic_filters: [{ filter_type: Prefix, pattern: "orders." }]
//! "#;
//! let config = Config::from_text(yaml, Format::Yaml, None)?.config;
//! // The wasmer engine: one thread per core, each with its own instances.
//! // (`PoolConfig::artifact_cache` keeps compiled modules between starts.)
//! let engine = Arc::new(Pool::new(PoolConfig::default())?);
//! // `modules` is a directory of `<module_id>.wasm` files.
//! let etl = Orchestrator::new(engine, &config, DirectorySource::new(modules), Options::default())?;
//! // A module that could not be loaded does not stop the start: its calls
//! // fail `unavailable`, handled by its pipeline's strategy, until a reload
//! // loads it. Say so, or refuse to start.
//! for error in etl.unavailable() {
//!     eprintln!("warning: {error}");
//! }
//!
//! let messages = vec![
//!     Message::new("orders.eu", "two pears"),
//!     Message::new("audit", "left alone"),
//! ];
//! let runtime = tokio::runtime::Runtime::new()?;
//! // One result per message, in input order; `process_batch_blocking` without a runtime.
//! let results = runtime.block_on(etl.process_batch(messages, ProcessOptions::default()))?;
//! let mut delivered = Vec::new();
//! for result in results {
//!     match result.disposition {
//!         Disposition::Delivered(message) => delivered.push(message), // produce it
//!         Disposition::Dropped => {}                                   // a module dropped it
//!         // Produce it to `letter.topic`; its cause is in its `etl-dlq-*` headers.
//!         Disposition::DeadLettered(letter) => panic!("{}", DeadLetterCause::of(&letter)?),
//!     }
//! }
//! assert_eq!(delivered[0].payload, "TWO PEARS");
//! assert_eq!(delivered[1].payload, "left alone"); // no module selected it
//!
//! // A new configuration takes effect atomically: each message runs wholly on
//! // the version in service as it was admitted (a batch larger than
//! // `max_in_flight`, admitted wave by wave, may meet two). One that does not
//! // plan, or a module that cannot be read, compiled or started, is an error
//! // and the version in service stays.
//! let yaml = yaml.replace("orders.", "audit");
//! let report = etl.reload(&Config::from_text(&yaml, Format::Yaml, None)?.config)?;
//! assert!(report.changed);
//! let audit = Message::new("audit", "now loud");
//! let results = etl.process_batch_blocking(vec![audit], ProcessOptions::default())?;
//! assert_eq!(results[0].config_version, report.version);
//! assert!(matches!(&results[0].disposition, Disposition::Delivered(m) if m.payload == "NOW LOUD"));
//!
//! // To stop: send nothing more, wait for the messages in flight (those of
//! // callers that gave up run on: a call that returned left none), then drop
//! // the handles (the engine's threads end with the last).
//! etl.drain_blocking();
//! assert_eq!(etl.in_flight(), 0);
//! drop(etl);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Underneath is the [`Plan`]: a validated configuration compiled into execution
//! order (pipelines as listed, stages by ascending priority, modules as declared)
//! with every topic filter in one [`rustmq_etl_filter::FilterSet`] and every rule
//! in one [`rustmq_etl_condition::ConditionSet`]. [`Plan::explain`] decides, for
//! one message and without running anything, which modules run and why the others
//! do not — the exact rules of `selection.md`.
//!
//! ```
//! use rustmq_etl_config::{Config, Format};
//! use rustmq_etl_core::Message;
//! use rustmq_etl_orchestrator::Plan;
//!
//! let yaml = r#"
//! pipeline_id: iot
//! stages:
//!   - priority: 0
//!     modules:
//!       - module_id: validator
//!         topic_filters: [{ filter_type: Prefix, pattern: "iot." }]
//! "#;
//! let config = Config::from_text(yaml, Format::Yaml, None)?.config;
//! let plan = Plan::build(&config)?;
//! let mut scratch = plan.create_scratch();
//! let explanation = plan.explain(&Message::new("iot.temp", "{}"), 0, &mut scratch);
//! assert_eq!(explanation.modules[0].module, "validator");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod breaker;
mod dead_letter;
mod options;
mod orchestrator;
mod plan;
mod result;
mod run;
mod snapshot;
mod stats;

pub use breaker::CircuitState;
pub use dead_letter::{headers as dead_letter_headers, DeadLetterCause, NotADeadLetter};
pub use options::{Backoff, BreakerSettings, Options};
pub use orchestrator::{
    Busy, EngineStopped, InService, Occurrence, OnThisThread, Orchestrator, ProcessOptions,
    ReloadError, ReloadReport,
};
pub use plan::{
    Explanation, ModuleRef, Plan, PlanError, PlanScratch, PlannedModule, PlannedPipeline,
    PlannedStage, Skipped,
};
pub use result::{
    Disposition, FailureAction, Processed, RanOutcome, SkipReason, Trace, TraceEntry, TraceEvent,
};
pub use snapshot::{DirectorySource, ModuleSource};

/// The types an embedding program handles with the orchestrator's, so that
/// it needs no other of this project's crates but an engine's.
pub use rustmq_etl_config::{
    Config, ConfigError, Diagnostic, Format, Loaded, PipelineSource, Severity,
};
pub use rustmq_etl_core::{
    Bytes, Edit, Engine, ErrorKind, Headers, LoadError, LoadStep, Message, MessageParseError,
    ModuleSettings, ModuleSpec, NoRunner, Outcome, UnknownErrorKind,
};

/// The configuration model whole (`rustmq-etl-config`): what a plan's
/// pipelines, stages and modules hold ([`PlannedPipeline::config`],
/// [`PlannedModule::instance_config`]).
pub use rustmq_etl_config as config;

/// The contract between the orchestrator and the engine that runs modules
/// (`rustmq-etl-core`): what an engine implements ([`Engine`],
/// `ModuleRunner`, `Task`, `Step`, `CallRequest`, `CallReport`, `CallError`),
/// a stand-in for tests included.
pub use rustmq_etl_core as engine;
