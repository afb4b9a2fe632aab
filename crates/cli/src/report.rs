//! What became of a message, as JSON: the one shape `run --trace`, `serve` and
//! `test-module` write.

use rustmq_etl_core::Message;
use rustmq_etl_orchestrator::{Disposition, Processed, RanOutcome, TraceEvent};
use serde::Serialize;
use serde_json::value::RawValue;

/// A message in its JSON Lines form (selection.md), embedded as written: a
/// JSON payload keeps its bytes, key order included.
pub(crate) fn message_json(message: &Message) -> Box<RawValue> {
    RawValue::from_string(message.to_json_line())
        .expect("Message::to_json_line writes one JSON object")
}

/// One processed message.
#[derive(Serialize)]
pub(crate) struct ProcessedJson<'a> {
    /// `delivered`, `dropped` or `dead_lettered`.
    pub result: &'static str,
    /// The delivered message or the dead letter; none when dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Box<RawValue>>,
    /// The configuration it ran on, all of it.
    pub config_version: u64,
    /// Module by module, when a trace was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Vec<TraceEntryJson<'a>>>,
}

impl<'a> ProcessedJson<'a> {
    pub(crate) fn new(processed: &'a Processed, with_trace: bool) -> Self {
        let message = match &processed.disposition {
            Disposition::Delivered(m) | Disposition::DeadLettered(m) => Some(message_json(m)),
            Disposition::Dropped => None,
        };
        ProcessedJson {
            result: processed.disposition.as_str(),
            message,
            config_version: processed.config_version,
            trace: with_trace.then(|| trace_json(processed)),
        }
    }
}

/// What one module did for a message, as JSON: `pipeline`, `priority`,
/// `module`, then the event's fields.
#[derive(Serialize)]
pub(crate) struct TraceEntryJson<'a> {
    pipeline: &'a str,
    priority: u32,
    module: &'a str,
    #[serde(flatten)]
    event: EventJson<'a>,
    /// The module's circuit breaker as the message met it (`closed`,
    /// `half_open` for the probe, `open` for a refusal); absent when the
    /// module was not called.
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EventJson<'a> {
    Ran {
        /// `unchanged`, `edited` or `dropped`.
        ran: &'static str,
        edits: usize,
        attempts: u32,
        time_us: u64,
        /// The module's version (a swapped module has a new one).
        version: u64,
    },
    Skipped {
        /// `pipeline_disabled`, `not_selected`, `earlier_failure` or `dropped`.
        skipped: &'static str,
        reason: String,
    },
    Failed {
        /// The error kind.
        failed: &'static str,
        error: &'a str,
        attempts: u32,
        /// What the error strategy did.
        action: &'static str,
    },
}

/// A message's trace: one object per module of every pipeline, in the
/// configuration's order (empty when no trace was recorded).
pub(crate) fn trace_json(processed: &Processed) -> Vec<TraceEntryJson<'_>> {
    let Some(trace) = &processed.trace else {
        return Vec::new();
    };
    trace
        .entries
        .iter()
        .map(|e| TraceEntryJson {
            pipeline: &e.pipeline,
            priority: e.priority,
            module: &e.module,
            circuit: e.circuit.map(|c| c.as_str()),
            event: match &e.event {
                TraceEvent::Ran {
                    outcome,
                    time,
                    attempts,
                    version,
                } => {
                    let (ran, edits) = match outcome {
                        RanOutcome::Unchanged => ("unchanged", 0),
                        RanOutcome::Edited(n) => ("edited", *n),
                        RanOutcome::Dropped => ("dropped", 0),
                    };
                    EventJson::Ran {
                        ran,
                        edits,
                        attempts: *attempts,
                        time_us: time.as_micros() as u64,
                        version: *version,
                    }
                }
                TraceEvent::Skipped(reason) => EventJson::Skipped {
                    skipped: reason.as_str(),
                    reason: reason.to_string(),
                },
                TraceEvent::Failed {
                    kind,
                    error,
                    attempts,
                    action,
                } => EventJson::Failed {
                    failed: kind.as_str(),
                    error,
                    attempts: *attempts,
                    action: action.as_str(),
                },
            },
        })
        .collect()
}
