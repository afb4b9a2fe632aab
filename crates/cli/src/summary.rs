//! What became of a run's messages, module by module: the table `run` and
//! `bench` print, from the messages' traces.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use rustmq_etl_orchestrator::{Disposition, FailureAction, Processed, TraceEvent};

use crate::plural;

/// What one module occurrence did over the run.
#[derive(Default)]
pub(crate) struct ModuleSummary {
    pub ran: u64,
    pub skipped: u64,
    pub failed: BTreeMap<&'static str, u64>,
    pub retried: u64,
    pub dead_lettered: u64,
    pub times: Vec<Duration>,
}

impl ModuleSummary {
    /// The `q` quantile of the call times, if any ran.
    pub(crate) fn quantile(&mut self, q: f64) -> Option<Duration> {
        quantile(&mut self.times, q)
    }

    /// All its calls' time together.
    pub(crate) fn total(&self) -> Duration {
        self.times.iter().sum()
    }
}

#[derive(Default)]
pub(crate) struct Summary {
    /// By (pipeline, stage priority, module), in first-seen order.
    pub modules: Vec<((String, u32, String), ModuleSummary)>,
    pub delivered: u64,
    pub dropped: u64,
    pub dead_lettered: u64,
}

impl Summary {
    fn module(&mut self, pipeline: &str, priority: u32, module: &str) -> &mut ModuleSummary {
        let at = match self
            .modules
            .iter()
            .position(|((p, s, m), _)| p == pipeline && *s == priority && m == module)
        {
            Some(at) => at,
            None => {
                self.modules.push((
                    (pipeline.to_owned(), priority, module.to_owned()),
                    ModuleSummary::default(),
                ));
                self.modules.len() - 1
            }
        };
        &mut self.modules[at].1
    }

    /// Counts a message and, if it has a trace, what each module did.
    pub(crate) fn add(&mut self, processed: &Processed) {
        match processed.disposition {
            Disposition::Delivered(_) => self.delivered += 1,
            Disposition::Dropped => self.dropped += 1,
            Disposition::DeadLettered(_) => self.dead_lettered += 1,
        }
        let Some(trace) = &processed.trace else {
            return;
        };
        for entry in &trace.entries {
            let s = self.module(&entry.pipeline, entry.priority, &entry.module);
            match &entry.event {
                TraceEvent::Ran { time, attempts, .. } => {
                    s.ran += 1;
                    s.retried += u64::from(attempts.saturating_sub(1));
                    s.times.push(*time);
                }
                TraceEvent::Skipped(_) => s.skipped += 1,
                TraceEvent::Failed {
                    kind,
                    attempts,
                    action,
                    ..
                } => {
                    *s.failed.entry(kind.as_str()).or_default() += 1;
                    s.retried += u64::from(attempts.saturating_sub(1));
                    if *action == FailureAction::DeadLettered {
                        s.dead_lettered += 1;
                    }
                }
            }
        }
    }

    /// The widths of the pipeline and module columns.
    pub(crate) fn widths(&self) -> (usize, usize) {
        self.modules
            .iter()
            .fold((8, 6), |(p, m), ((pipeline, _, module), _)| {
                (p.max(pipeline.len()), m.max(module.len()))
            })
    }

    /// The table of modules, then the accounting line (`input` messages read,
    /// `bad` lines not processed).
    pub(crate) fn print(&mut self, out: &mut dyn Write, input: u64, bad: u64) -> io::Result<()> {
        let (pw, mw) = self.widths();
        writeln!(
            out,
            "{:<pw$} {:>5} {:<mw$} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10}  failed by kind",
            "pipeline",
            "stage",
            "module",
            "ran",
            "skipped",
            "failed",
            "retried",
            "dead",
            "p50",
            "p99"
        )?;
        for ((pipeline, stage, module), s) in &mut self.modules {
            let failed: u64 = s.failed.values().sum();
            let kinds: Vec<String> = s.failed.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let (p50, p99) = (show(s.quantile(0.5)), show(s.quantile(0.99)));
            let row = format!(
                "{pipeline:<pw$} {stage:>5} {module:<mw$} {:>8} {:>8} {failed:>8} {:>8} {:>8} {p50:>10} {p99:>10}  {}",
                s.ran,
                s.skipped,
                s.retried,
                s.dead_lettered,
                kinds.join(", ")
            );
            writeln!(out, "{}", row.trim_end())?;
        }
        writeln!(
            out,
            "{input} in = {} delivered + {} dropped + {} dead-lettered{}",
            self.delivered,
            self.dropped,
            self.dead_lettered,
            if bad > 0 {
                format!(
                    "; {bad} bad input line{} not processed",
                    plural(bad as usize)
                )
            } else {
                String::new()
            }
        )
    }
}

/// The `q` quantile of `times` (sorted here), if there are any.
pub(crate) fn quantile(times: &mut [Duration], q: f64) -> Option<Duration> {
    times.sort_unstable();
    let last = times.len().checked_sub(1)?;
    Some(times[((times.len() as f64 * q) as usize).min(last)])
}

/// A time for a table: `-` if none.
pub(crate) fn show(t: Option<Duration>) -> String {
    t.map_or("-".to_owned(), |t| format!("{t:.1?}"))
}
