//! The orchestrator: the crate a broker depends on.
//!
//! An [`Orchestrator`] runs messages through the configured pipelines on an
//! engine (the wasmer pool, or any `rustmq_etl_core::Engine`): async
//! [`Orchestrator::process`] and [`Orchestrator::process_batch`], a non-blocking
//! [`Orchestrator::try_process_batch`] and [`Orchestrator::process_batch_blocking`]
//! for callers without a runtime; every message ends in one [`Processed`]
//! (delivered, dropped or dead-lettered, with an optional [`Trace`]).
//! [`Orchestrator::reload`] swaps configuration and modules together. The
//! user guide is `docs/execution.md`.
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
mod options;
mod orchestrator;
mod plan;
mod result;
mod run;
mod snapshot;
mod stats;

pub use breaker::CircuitState;
pub use options::{Backoff, BreakerSettings, Options};
pub use orchestrator::{
    Busy, EngineStopped, InService, Occurrence, Orchestrator, ProcessOptions, ReloadError,
    ReloadReport,
};
pub use plan::{
    Explanation, ModuleRef, Plan, PlanError, PlanScratch, PlannedModule, PlannedPipeline,
    PlannedStage, Skipped,
};
pub use result::{
    Disposition, FailureAction, Processed, RanOutcome, SkipReason, Trace, TraceEntry, TraceEvent,
};
pub use run::headers as dead_letter_headers;
pub use snapshot::{DirectorySource, ModuleSource};

/// The types an embedding program handles with the orchestrator's, so that
/// it needs no other of this project's crates but an engine's.
pub use rustmq_etl_config::{Config, ConfigError, Format, Loaded};
pub use rustmq_etl_core::{
    Bytes, Edit, Engine, ErrorKind, Headers, LoadError, LoadStep, Message, Outcome,
};
