//! What became of a message, and the trace of how.

use std::fmt;
use std::time::Duration;

use rustmq_etl_core::{ErrorKind, Message};

use crate::breaker::CircuitState;

/// The end of one message's journey: exactly one of these (execution.md,
/// "Accounting").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The message goes on, possibly edited, possibly on another topic.
    Delivered(Message),
    /// A module dropped it.
    Dropped,
    /// It became a dead letter: the message as it entered the pipeline that
    /// failed, on the dead-letter topic, with the `etl-dlq-*` headers.
    DeadLettered(Message),
}

impl Disposition {
    /// `delivered`, `dropped` or `dead_lettered` (the metrics' label).
    pub fn as_str(&self) -> &'static str {
        match self {
            Disposition::Delivered(_) => "delivered",
            Disposition::Dropped => "dropped",
            Disposition::DeadLettered(_) => "dead_lettered",
        }
    }
}

/// One processed message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Processed {
    /// What became of it.
    pub disposition: Disposition,
    /// The version of the configuration it ran on, all of it.
    pub config_version: u64,
    /// How it went, module by module, if a trace was asked for.
    pub trace: Option<Trace>,
}

impl Processed {
    /// A message's end, without a trace (the engine makes these; a program
    /// makes its own to test what it does with them).
    pub fn new(disposition: Disposition, config_version: u64) -> Self {
        Processed {
            disposition,
            config_version,
            trace: None,
        }
    }

    /// The same, with `trace`.
    pub fn with_trace(mut self, trace: Trace) -> Self {
        self.trace = Some(trace);
        self
    }
}

/// A message's trace: every module of every pipeline, in the plan's order
/// (pipelines in order, stages by priority, modules as listed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Trace {
    /// How long the message waited before its journey began: from being
    /// handed to the engine until an engine thread started it (its batch's
    /// wait for the thread, then the messages before it in the batch).
    pub queued: Duration,
    /// One entry per module of every pipeline (a module retried is one entry).
    pub entries: Vec<TraceEntry>,
}

/// What one module did for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// The pipeline's id.
    pub pipeline: String,
    /// The stage's priority.
    pub priority: u32,
    /// The module's id.
    pub module: String,
    /// The module's position among all modules of the plan that ran the
    /// message ([`PlannedModule::index`](crate::PlannedModule::index)): tells
    /// apart two listings of one module in one stage (with the same settings
    /// or not), which the other fields do not. It holds within one
    /// configuration version (`Processed::config_version`); a reload may
    /// number the modules anew.
    pub index: usize,
    /// What happened.
    pub event: TraceEvent,
    /// The module's circuit breaker as the message's last call of it met it:
    /// `Closed` for a call let through, `HalfOpen` for the probe after a
    /// cool-down, `Open` for a call refused (`circuit_open`); none for a
    /// module never called for the message (skipped, or its budget spent
    /// before its first call).
    pub circuit: Option<CircuitState>,
}

/// What happened to one module for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceEvent {
    /// It ran and answered.
    Ran {
        /// What it answered.
        outcome: RanOutcome,
        /// How long its calls took, together.
        time: Duration,
        /// How many times it was called (more than one after retries).
        attempts: u32,
        /// The module version that answered.
        version: u64,
    },
    /// It did not run.
    Skipped(SkipReason),
    /// It failed, and what the error strategy did about it.
    Failed {
        /// The error's kind.
        kind: ErrorKind,
        /// The error, for people.
        error: String,
        /// How many times it was called (0: it was not called at all, for
        /// an open circuit or a budget already spent).
        attempts: u32,
        /// What was done.
        action: FailureAction,
    },
}

/// What a module that ran answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RanOutcome {
    /// The message as it was.
    Unchanged,
    /// Edits (this many).
    Edited(usize),
    /// It dropped the message.
    Dropped,
}

/// Why a module did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// Its pipeline is disabled.
    PipelineDisabled,
    /// Its filters or rules do not select the message (the text says which;
    /// empty when [`ProcessOptions::skip_reasons`](crate::ProcessOptions::skip_reasons)
    /// is off).
    NotSelected(String),
    /// An earlier failure ended the pipeline (or the message's journey), or its
    /// stage, before it.
    EarlierFailure,
    /// An earlier module dropped the message.
    Dropped,
}

/// What the error strategy did with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureAction {
    /// The module was skipped; the stage went on.
    Skipped,
    /// The module was skipped and its stage ended (a stage timeout).
    EndedStage,
    /// The module was skipped and its pipeline ended, delivering the message
    /// as it stood (a pipeline timeout).
    EndedPipeline,
    /// The pipeline stopped; the message left it as it entered.
    StoppedPipeline,
    /// The message became a dead letter.
    DeadLettered,
    /// Nothing: in its parallel stage, the failure of a module declared
    /// before it had already ended the pipeline (failures are handled in
    /// declaration order, and the first that ends the pipeline decides).
    EarlierFailure,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::PipelineDisabled => f.write_str("the pipeline is disabled"),
            SkipReason::NotSelected(why) => f.write_str(why),
            SkipReason::EarlierFailure => f.write_str("an earlier failure ended its run"),
            SkipReason::Dropped => f.write_str("an earlier module dropped the message"),
        }
    }
}

impl SkipReason {
    /// A stable `snake_case` name: `pipeline_disabled`, `not_selected`,
    /// `earlier_failure` or `dropped` (the text for people is its
    /// `Display`).
    pub fn as_str(&self) -> &'static str {
        match self {
            SkipReason::PipelineDisabled => "pipeline_disabled",
            SkipReason::NotSelected(_) => "not_selected",
            SkipReason::EarlierFailure => "earlier_failure",
            SkipReason::Dropped => "dropped",
        }
    }
}

impl FailureAction {
    /// A stable `snake_case` name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureAction::Skipped => "skipped",
            FailureAction::EndedStage => "ended_stage",
            FailureAction::EndedPipeline => "ended_pipeline",
            FailureAction::StoppedPipeline => "stopped_pipeline",
            FailureAction::DeadLettered => "dead_lettered",
            FailureAction::EarlierFailure => "earlier_failure",
        }
    }
}
