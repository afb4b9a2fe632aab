//! What became of a run's messages, module by module: the table `run` and
//! `bench` print, from the messages' traces.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::time::Duration;

use rustmq_etl_orchestrator::{Disposition, FailureAction, Processed, TraceEntry, TraceEvent};

use crate::plural;

/// What one module occurrence did over the run.
pub(crate) struct ModuleSummary {
    pub ran: u64,
    pub skipped: u64,
    pub failed: BTreeMap<&'static str, u64>,
    pub retried: u64,
    pub dead_lettered: u64,
    /// Its calls' times in nanoseconds, to two significant digits: memory
    /// bounded by the range of the times, not their number (about 7 KiB for
    /// times in microseconds, 58 KiB at most, however long a run reads).
    times: hdrhistogram::Histogram<u64>,
    /// All its calls' time together.
    total: Duration,
}

impl Default for ModuleSummary {
    fn default() -> Self {
        ModuleSummary {
            ran: 0,
            skipped: 0,
            failed: BTreeMap::new(),
            retried: 0,
            dead_lettered: 0,
            // Growing as larger times come (two significant digits are
            // within 1%): no bound to guess.
            times: hdrhistogram::Histogram::new(2).expect("2 significant digits are allowed"),
            total: Duration::ZERO,
        }
    }
}

impl ModuleSummary {
    /// Counts a call of `time`.
    pub(crate) fn record(&mut self, time: Duration) {
        let ns = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        if self.times.record(ns).is_err() {
            // Past what the histogram can grow to: counted at its top.
            self.times.saturating_record(ns);
        }
        self.total = self.total.saturating_add(time);
    }

    /// The `q` quantile of the call times (within 1%), if any ran.
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        (!self.times.is_empty()).then(|| Duration::from_nanos(self.times.value_at_quantile(q)))
    }

    /// All its calls' time together.
    pub(crate) fn total(&self) -> Duration {
        self.total
    }
}

/// A row of the table: one listing of a module in a stage.
pub(crate) struct Row {
    pub pipeline: String,
    pub stage: u32,
    pub module: String,
    /// The module's position in the plan (`TraceEntry::index`): two listings
    /// of one module in one stage are two rows.
    index: usize,
}

#[derive(Default)]
pub(crate) struct Summary {
    /// One per module listing, in first-seen order until
    /// [`Summary::in_plan_order`].
    pub modules: Vec<(Row, ModuleSummary)>,
    /// By `TraceEntry::index` (dense: below the plan's module count), the
    /// row in `modules`.
    rows: Vec<Option<usize>>,
    pub delivered: u64,
    pub dropped: u64,
    pub dead_lettered: u64,
}

/// Rows of one module in one stage share this.
fn listing(row: &Row) -> (&str, u32, &str) {
    (&row.pipeline, row.stage, &row.module)
}

impl Summary {
    fn module(&mut self, entry: &TraceEntry) -> &mut ModuleSummary {
        if self.rows.len() <= entry.index {
            self.rows.resize(entry.index + 1, None);
        }
        let at = match self.rows[entry.index] {
            Some(at) => at,
            None => {
                self.modules.push((
                    Row {
                        pipeline: entry.pipeline.clone(),
                        stage: entry.priority,
                        module: entry.module.clone(),
                        index: entry.index,
                    },
                    ModuleSummary::default(),
                ));
                self.rows[entry.index] = Some(self.modules.len() - 1);
                self.modules.len() - 1
            }
        };
        &mut self.modules[at].1
    }

    /// Puts the rows in the configuration's order (the plan's: pipelines in
    /// order, stages by priority, modules as listed), whatever order the
    /// messages met the modules in.
    pub(crate) fn in_plan_order(&mut self) {
        self.modules.sort_by_key(|(row, _)| row.index);
        for (at, (row, _)) in self.modules.iter().enumerate() {
            self.rows[row.index] = Some(at);
        }
    }

    /// Each row's module column: the module's id, and `#n` after it when its
    /// stage lists it more than once (`n` counting its listings in the
    /// stage's order, which is the plan's).
    pub(crate) fn labels(&self) -> Vec<String> {
        let mut listings: HashMap<_, Vec<usize>> = HashMap::new();
        for (row, _) in &self.modules {
            listings.entry(listing(row)).or_default().push(row.index);
        }
        for indices in listings.values_mut() {
            indices.sort_unstable();
        }
        self.modules
            .iter()
            .map(|(row, _)| match &listings[&listing(row)][..] {
                [_] => row.module.clone(),
                indices => {
                    let n = 1 + indices.partition_point(|&i| i < row.index);
                    format!("{}#{n}", row.module)
                }
            })
            .collect()
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
            let s = self.module(entry);
            match &entry.event {
                TraceEvent::Ran { time, attempts, .. } => {
                    s.ran += 1;
                    s.retried += u64::from(attempts.saturating_sub(1));
                    s.record(*time);
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

    /// The widths of the pipeline and module columns, for `labels`.
    pub(crate) fn widths(&self, labels: &[String]) -> (usize, usize) {
        let pipeline = self.modules.iter().map(|(row, _)| row.pipeline.len());
        let module = labels.iter().map(String::len);
        (pipeline.fold(8, usize::max), module.fold(6, usize::max))
    }

    /// The table of modules, a row per listing in the configuration's order
    /// (none when no message was run), then the accounting line (`input`
    /// messages read, `bad` lines not processed).
    pub(crate) fn print(&mut self, out: &mut dyn Write, input: u64, bad: u64) -> io::Result<()> {
        self.in_plan_order();
        let labels = self.labels();
        let (pw, mw) = self.widths(&labels);
        if !self.modules.is_empty() {
            self.print_table(out, &labels, pw, mw)?;
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

    fn print_table(
        &self,
        out: &mut dyn Write,
        labels: &[String],
        pw: usize,
        mw: usize,
    ) -> io::Result<()> {
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
        for ((row, s), module) in self.modules.iter().zip(labels) {
            let (pipeline, stage) = (&row.pipeline, row.stage);
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
        Ok(())
    }
}

/// The `q` quantile of `times` (sorted here) by nearest rank, as the
/// module rows' ([`ModuleSummary::quantile`]), if there are any.
pub(crate) fn quantile(times: &mut [Duration], q: f64) -> Option<Duration> {
    times.sort_unstable();
    let n = times.len();
    (n > 0).then(|| times[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
}

/// A time for a table: `-` if none.
pub(crate) fn show(t: Option<Duration>) -> String {
    t.map_or("-".to_owned(), |t| format!("{t:.1?}"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rustmq_etl_orchestrator::{SkipReason, Trace};

    use super::*;

    proptest! {
        /// A module's quantiles, kept in bounded memory, are within 1% above
        /// the nearest-rank quantile of every time kept and sorted (the
        /// reference); its total is the exact sum.
        #[test]
        fn quantiles_are_within_a_percent_of_the_exact_ones(
            times in prop::collection::vec(0u64..20_000_000_000, 1..300),
            q in 0.01f64..=1.0,
        ) {
            let mut summary = ModuleSummary::default();
            for &t in &times {
                summary.record(Duration::from_nanos(t));
            }
            let mut sorted = times.clone();
            sorted.sort_unstable();
            let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
            let exact = sorted[rank - 1];
            let kept = summary.quantile(q).unwrap().as_nanos() as u64;
            prop_assert!(exact <= kept && kept <= exact + exact / 100 + 1, "{} vs {}", kept, exact);
            prop_assert_eq!(summary.total(), Duration::from_nanos(times.iter().sum()));
        }
    }

    /// The bench's quantile of all the times by nearest rank, as the
    /// module rows': p99 of 100 times is the 99th, p50 of 4 the 2nd.
    #[test]
    fn quantiles_of_all_the_times_go_by_nearest_rank() {
        let mut times: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(quantile(&mut times, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&mut times, 1.0), Some(Duration::from_millis(100)));
        let mut four: Vec<Duration> = (1..=4).map(Duration::from_millis).collect();
        assert_eq!(quantile(&mut four, 0.5), Some(Duration::from_millis(2)));
        assert_eq!(quantile(&mut four, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    /// The times' memory does not grow with their number.
    #[test]
    fn a_million_calls_take_no_more_room_than_one() {
        let mut summary = ModuleSummary::default();
        summary.record(Duration::from_micros(6));
        let room = summary.times.distinct_values();
        for i in 0..1_000_000u64 {
            summary.record(Duration::from_nanos(1_000 + i % 5_000));
        }
        assert_eq!(summary.times.distinct_values(), room);
        assert_eq!(summary.ran, 0, "recording is not counting a call as ran");
        assert_eq!(summary.times.len(), 1_000_001);
    }

    /// A message that skipped every module of `listings` (pipeline, stage,
    /// module, plan index), in that order.
    fn traced(listings: &[(&str, u32, &str, usize)]) -> Processed {
        let entries = listings
            .iter()
            .map(|&(pipeline, priority, module, index)| TraceEntry {
                pipeline: pipeline.to_owned(),
                priority,
                module: module.to_owned(),
                index,
                event: TraceEvent::Skipped(SkipReason::PipelineDisabled),
                circuit: None,
            })
            .collect();
        let mut trace = Trace::default();
        trace.entries = entries;
        Processed::new(Disposition::Dropped, 1).with_trace(trace)
    }

    #[test]
    fn listings_of_one_module_in_one_stage_are_numbered_and_no_others() {
        let mut summary = Summary::default();
        let listings = [
            ("p", 0, "a", 0),
            ("p", 0, "b", 1),
            ("p", 0, "a", 2),
            ("p", 0, "a", 3),
            ("p", 1, "a", 4),
            ("q", 0, "b", 5),
        ];
        summary.add(&traced(&listings));
        // Seen again, in another order: the same rows, counted twice.
        let mut reversed = listings;
        reversed.reverse();
        summary.add(&traced(&reversed));
        assert_eq!(
            summary.labels(),
            ["a#1", "b", "a#2", "a#3", "a", "b"],
            "one row per listing, in first-seen order"
        );
        assert!(summary.modules.iter().all(|(_, s)| s.skipped == 2));
    }

    #[test]
    fn rows_go_in_the_configurations_order_and_keep_counting() {
        let listings = [
            ("p", 0, "a", 0),
            ("p", 0, "b", 1),
            ("p", 0, "a", 2),
            ("p", 1, "a", 3),
            ("q", 0, "b", 4),
        ];
        let mut summary = Summary::default();
        let scrambled = [3, 0, 4, 2, 1].map(|i| listings[i]);
        summary.add(&traced(&scrambled));
        assert_eq!(summary.labels(), ["a", "a#1", "b", "a#2", "b"]);
        summary.in_plan_order();
        assert_eq!(summary.labels(), ["a#1", "b", "a#2", "a", "b"]);
        let indices: Vec<usize> = summary.modules.iter().map(|(row, _)| row.index).collect();
        assert_eq!(indices, [0, 1, 2, 3, 4]);
        // Counted into the right rows after the sort.
        summary.add(&traced(&listings[..2]));
        let skipped: Vec<u64> = summary.modules.iter().map(|(_, s)| s.skipped).collect();
        assert_eq!(skipped, [2, 2, 1, 1, 1]);
    }

    /// With no message run, no table: the accounting line alone (a header
    /// over no rows said nothing).
    #[test]
    fn no_messages_print_the_accounting_line_alone() {
        let mut out = Vec::new();
        Summary::default().print(&mut out, 0, 2).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 in = 0 delivered + 0 dropped + 0 dead-lettered; 2 bad input lines not processed\n"
        );
        let mut out = Vec::new();
        let mut summary = Summary::default();
        summary.add(&traced(&[("p", 0, "a", 0)]));
        summary.print(&mut out, 1, 0).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("pipeline stage module"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}
