//! The orchestrator's metrics: design.md's "Monitoring and Observability".
//!
//! A batch counts into its engine thread's [`Tally`] of plain numbers while it
//! runs; each time it stops running (it ended, or waits) the tally is added to
//! the shared totals ([`Stats`]) and emptied, one atomic addition per
//! distinct counter or histogram bucket the batch touched. The tally notes
//! which pipelines, modules and histograms it counted for, so adding and
//! emptying it visit those alone and cost what the batch counted, not what
//! the configuration holds. [`Stats::publish`]
//! sets the `metrics` counters to the totals (batches do so every 100 ms) and,
//! when an exporter asks (`Orchestrator::publish_metrics`), records the
//! histogram samples gathered since the last time, looking every handle up
//! each time: so the figures reach whatever recorder is installed when they
//! are published, and nothing on the per-message path touches the recorder.
//! Totals are keyed by their labels and outlive configurations, so a reload
//! never sets a counter back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustmq_etl_core::ErrorKind;

use crate::plan::Plan;
use crate::result::Disposition;

/// Buckets of a histogram: four per power of two of nanoseconds, up to 2^40 ns
/// (about 18 minutes); the last one takes everything longer.
const BUCKETS: usize = 160;
const KINDS: usize = ErrorKind::ALL.len();
/// A module's counts in a [`Tally`]: outcomes, errors by kind, dead letters
/// by kind, retries.
const MODULE_COUNTS: usize = 4 + 2 * KINDS + 1;

#[inline]
fn bucket(time: Duration) -> usize {
    // Nanoseconds in a `u64`, not `as_nanos`'s `u128`: a sample at least
    // 2^30 s long (far past the last bucket's 2^40 ns) goes to the last bucket
    // at once, and below that the product cannot overflow.
    let secs = time.as_secs();
    if secs >= 1 << 30 {
        return BUCKETS - 1;
    }
    let ns = secs * 1_000_000_000 + u64::from(time.subsec_nanos());
    if ns < 4 {
        return ns as usize;
    }
    let power = 63 - ns.leading_zeros() as usize;
    let quarter = ((ns >> (power - 2)) & 3) as usize;
    (power * 4 + quarter).min(BUCKETS - 1)
}

/// A bucket's middle, in seconds: what a sample in it is published as (at
/// most half the bucket's width off, 12.5% of the sample at most).
fn bucket_seconds(index: usize) -> f64 {
    if index < 4 {
        return index as f64 * 1e-9;
    }
    let (power, quarter) = (index / 4, index % 4);
    let width = (1u64 << power) as f64 / 4.0;
    let low = (1u64 << power) as f64 + quarter as f64 * width;
    (low + width / 2.0) * 1e-9
}

#[derive(Debug)]
struct Histogram {
    buckets: Box<[AtomicU64]>,
    published: Mutex<Box<[u64]>>,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            published: Mutex::new(vec![0; BUCKETS].into_boxed_slice()),
        }
    }

    fn publish(&self, handle: metrics::Histogram) {
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        for (i, bucket) in self.buckets.iter().enumerate() {
            let total = bucket.load(Ordering::Relaxed);
            let new = total - published[i];
            if new > 0 {
                handle.record_many(bucket_seconds(i), new as usize);
                published[i] = total;
            }
        }
    }
}

/// Counters of one pipeline.
#[derive(Debug)]
struct PipelineTotals {
    /// processed, delivered, stopped, dropped, dead_lettered
    results: [AtomicU64; 5],
    /// Counted since its counters were last published.
    changed: AtomicBool,
    /// Time per message that ran in it.
    time: Histogram,
}

const PIPELINE_RESULTS: [&str; 5] = [
    "processed",
    "delivered",
    "stopped",
    "dropped",
    "dead_lettered",
];

/// Counters of one module occurrence in one pipeline.
#[derive(Debug)]
struct ModuleTotals {
    /// unchanged, edited, dropped, failed
    outcomes: [AtomicU64; 4],
    errors: [AtomicU64; KINDS],
    dead_letters: [AtomicU64; KINDS],
    retries: AtomicU64,
    time: Histogram,
    /// Counted since its counters were last published.
    changed: AtomicBool,
}

const MODULE_OUTCOMES: [&str; 4] = ["unchanged", "edited", "dropped", "failed"];

/// The totals, keyed by labels, for as long as the orchestrator lives.
#[derive(Debug)]
pub(crate) struct Stats {
    messages: [AtomicU64; 3],
    pipelines: Mutex<HashMap<String, Arc<PipelineTotals>>>,
    /// By pipeline, module and the occurrence's `settings` label.
    modules: Mutex<HashMap<ModuleKey, Arc<ModuleTotals>>>,
    stages: Mutex<HashMap<(String, u32), Arc<Histogram>>>,
    selection: Histogram,
    last_publish: Mutex<Instant>,
}

/// A module occurrence's series in a pipeline: `pipeline`, `module` and,
/// for settings other than the defaults, `settings` (`ModuleSettings::label`).
type ModuleKey = (String, String, Option<String>);

/// The entries of `map`, taken out under its lock.
fn entries<K: Clone, V>(map: &Mutex<HashMap<K, Arc<V>>>) -> Vec<(K, Arc<V>)> {
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A configuration's view of the totals, by its own indices.
#[derive(Debug)]
pub(crate) struct Table {
    pipelines: Vec<Arc<PipelineTotals>>,
    /// By plan module index.
    modules: Vec<Arc<ModuleTotals>>,
    /// By pipeline, then stage in execution order, one after another.
    stages: Vec<Arc<Histogram>>,
}

/// What a pipeline did with a message, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PipelineResult {
    Processed = 0,
    Delivered = 1,
    Stopped = 2,
    Dropped = 3,
    DeadLettered = 4,
}

/// What a module call did, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallResult {
    Unchanged = 0,
    Edited = 1,
    Dropped = 2,
    Failed = 3,
}

/// An engine thread's counts since its batch started running, added to the
/// totals (and so emptied) when the batch stops running.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    messages: [u64; 3],
    pipelines: Vec<[u64; 5]>,
    /// By plan module index: outcomes, then errors, then dead letters by kind, then retries.
    modules: Vec<[u64; 4 + 2 * KINDS + 1]>,
    /// Histogram counts by series: series 0 is selection, then one per
    /// module, then one per stage, then one per pipeline.
    samples: Vec<Samples>,
    /// The pipelines, modules and series counted for since the tally was
    /// last emptied, each once.
    touched_pipelines: Marks,
    touched_modules: Marks,
    touched_samples: Vec<usize>,
}

/// Indices, each noted once until drained.
#[derive(Debug, Default)]
struct Marks {
    marked: Vec<bool>,
    list: Vec<usize>,
}

impl Marks {
    fn new(len: usize) -> Marks {
        Marks {
            marked: vec![false; len],
            list: Vec::new(),
        }
    }

    #[inline]
    fn mark(&mut self, i: usize) {
        if !self.marked[i] {
            self.marked[i] = true;
            self.list.push(i);
        }
    }

    /// The indices noted, each once, unmarked as they are taken.
    fn drain(&mut self) -> impl Iterator<Item = usize> + '_ {
        let Marks { marked, list } = self;
        list.drain(..).inspect(move |&i| marked[i] = false)
    }
}

/// One histogram's counts in a batch.
#[derive(Debug, Clone)]
struct Samples {
    counts: [u32; BUCKETS],
    /// The buckets that hold counts, a bit each. A batch's samples fall in a
    /// few buckets; adding and clearing only those spares a pass over them all.
    touched: [u64; TOUCHED_WORDS],
}

const TOUCHED_WORDS: usize = BUCKETS.div_ceil(64);

impl Samples {
    const EMPTY: Samples = Samples {
        counts: [0; BUCKETS],
        touched: [0; TOUCHED_WORDS],
    };

    #[inline]
    fn add(&mut self, time: Duration) {
        let bucket = bucket(time);
        self.counts[bucket] += 1;
        self.touched[bucket / 64] |= 1 << (bucket % 64);
    }

    fn is_empty(&self) -> bool {
        self.touched == [0; TOUCHED_WORDS]
    }

    /// Gives `each` every bucket that holds counts, with its count, in
    /// order; leaves the samples empty.
    fn drain(&mut self, mut each: impl FnMut(usize, u32)) {
        for (w, word) in self.touched.iter_mut().enumerate() {
            let mut bits = std::mem::take(word);
            while bits != 0 {
                let bucket = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                each(bucket, std::mem::take(&mut self.counts[bucket]));
            }
        }
    }
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            messages: Default::default(),
            pipelines: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            stages: Mutex::new(HashMap::new()),
            selection: Histogram::new(),
            last_publish: Mutex::new(Instant::now()),
        }
    }

    /// The totals of `plan`'s pipelines, modules and stages, made where new.
    pub(crate) fn table(&self, plan: &Plan) -> Table {
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        let mut stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        let mut table = Table {
            pipelines: Vec::new(),
            modules: Vec::new(),
            stages: Vec::new(),
        };
        for pipeline in plan.pipelines() {
            let id = &pipeline.config.pipeline_id;
            table.pipelines.push(
                pipelines
                    .entry(id.clone())
                    .or_insert_with(|| {
                        Arc::new(PipelineTotals {
                            results: Default::default(),
                            time: Histogram::new(),
                            changed: AtomicBool::new(false),
                        })
                    })
                    .clone(),
            );
            for stage in &pipeline.stages {
                table.stages.push(
                    stages
                        .entry((id.clone(), stage.priority))
                        .or_insert_with(|| Arc::new(Histogram::new()))
                        .clone(),
                );
                for module in &stage.modules {
                    let settings = plan.occurrences()[module.occurrence].settings.label();
                    table.modules.push(
                        modules
                            .entry((id.clone(), module.module_id.clone(), settings))
                            .or_insert_with(|| {
                                Arc::new(ModuleTotals {
                                    outcomes: Default::default(),
                                    errors: Default::default(),
                                    dead_letters: Default::default(),
                                    retries: AtomicU64::new(0),
                                    time: Histogram::new(),
                                    changed: AtomicBool::new(false),
                                })
                            })
                            .clone(),
                    );
                }
            }
        }
        table
    }

    /// Adds a batch's counts to the totals and empties the tally.
    pub(crate) fn add(&self, table: &Table, tally: &mut Tally) {
        let add = |counter: &AtomicU64, n: u64| {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        };
        for (counter, n) in self
            .messages
            .iter()
            .zip(std::mem::take(&mut tally.messages))
        {
            add(counter, n);
        }
        for p in tally.touched_pipelines.drain() {
            let counts = std::mem::take(&mut tally.pipelines[p]);
            for (counter, n) in table.pipelines[p].results.iter().zip(counts) {
                add(counter, n);
            }
            // After the counts: a publish that sees it sees them.
            table.pipelines[p].changed.store(true, Ordering::Release);
        }
        for m in tally.touched_modules.drain() {
            let counts = std::mem::replace(&mut tally.modules[m], [0; MODULE_COUNTS]);
            let totals = &table.modules[m];
            let (outcomes, rest) = counts.split_at(4);
            let (errors, rest) = rest.split_at(KINDS);
            let (dead_letters, retries) = rest.split_at(KINDS);
            for (counter, n) in totals.outcomes.iter().zip(outcomes) {
                add(counter, *n);
            }
            for (counter, n) in totals.errors.iter().zip(errors) {
                add(counter, *n);
            }
            for (counter, n) in totals.dead_letters.iter().zip(dead_letters) {
                add(counter, *n);
            }
            add(&totals.retries, retries[0]);
            totals.changed.store(true, Ordering::Release);
        }
        for series in tally.touched_samples.drain(..) {
            // Series 0 is selection, then one per module, then one per
            // stage, then one per pipeline.
            let (modules, stages) = (table.modules.len(), table.stages.len());
            let histogram = match series.checked_sub(1) {
                None => &self.selection,
                Some(m) if m < modules => &table.modules[m].time,
                Some(s) if s < modules + stages => &table.stages[s - modules],
                Some(p) => &table.pipelines[p - modules - stages].time,
            };
            tally.samples[series].drain(|bucket, n| add(&histogram.buckets[bucket], u64::from(n)));
        }
    }

    /// Whether a publish is due: at most every 100 ms from the batches.
    pub(crate) fn publish_due(&self) -> bool {
        match self.last_publish.try_lock() {
            Ok(mut last) if last.elapsed() >= Duration::from_millis(100) => {
                *last = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Gives the recorder installed now each series' help text (the
    /// `# HELP` lines of Prometheus text): on every full publish, so that a
    /// recorder installed late has them too.
    pub(crate) fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        describe_counter!(
            "rustmq_etl_messages_total",
            "Messages by what became of them: delivered, dropped or dead_lettered."
        );
        describe_counter!(
            "rustmq_etl_pipeline_messages_total",
            "Messages by pipeline: processed (entered), delivered, stopped, dropped, dead_lettered."
        );
        describe_counter!(
            "rustmq_etl_module_calls_total",
            "Module calls by outcome: unchanged, edited, dropped, failed."
        );
        describe_counter!(
            "rustmq_etl_module_errors_total",
            "Failed module calls (and circuit or budget refusals) by error kind."
        );
        describe_counter!("rustmq_etl_module_retries_total", "Module calls retried.");
        describe_counter!(
            "rustmq_etl_dead_letters_total",
            "Dead letters by the module and the error kind that made them."
        );
        describe_histogram!(
            "rustmq_etl_module_duration_seconds",
            Unit::Seconds,
            "Time per module call."
        );
        describe_histogram!(
            "rustmq_etl_pipeline_duration_seconds",
            Unit::Seconds,
            "Time per pipeline and message, for pipelines that selected a module."
        );
        describe_histogram!(
            "rustmq_etl_stage_duration_seconds",
            Unit::Seconds,
            "Time per stage and message, by stage priority."
        );
        describe_histogram!(
            "rustmq_etl_selection_duration_seconds",
            Unit::Seconds,
            "Time evaluating topic filters and conditional rules."
        );
        describe_gauge!(
            "rustmq_etl_circuit_state",
            "A module occurrence's circuit breaker: 0 closed, 1 open, 2 half-open."
        );
        describe_gauge!(
            "rustmq_etl_messages_in_flight",
            "Messages admitted and not yet done (back-pressure)."
        );
        describe_gauge!(
            "rustmq_etl_modules_unavailable",
            "Module occurrences in service that could not be loaded."
        );
        describe_gauge!(
            "rustmq_etl_module_unavailable",
            "1 while this module occurrence could not be loaded (its calls fail unavailable)."
        );
        describe_gauge!(
            "rustmq_etl_config_version",
            "The configuration version in service."
        );
        describe_counter!(
            "rustmq_etl_reloads_total",
            "Reloads: applied, unchanged, rejected."
        );
        describe_gauge!(
            "rustmq_etl_config_last_reload_successful",
            "1 if the last reload (or the start) was applied or found nothing to change, 0 if it was rejected."
        );
        describe_gauge!(
            "rustmq_etl_config_last_reload_success_timestamp_seconds",
            Unit::Seconds,
            "When the last reload that was not rejected (or the start) ended, in seconds since the Unix epoch."
        );
        describe_gauge!(
            "rustmq_etl_messages_waiting",
            "Messages of calls waiting for room among those in flight (back-pressure)."
        );
    }

    /// Sets the `metrics` counters to the totals, and with `histograms`
    /// records the histogram samples since the last such publish, under the
    /// recorder installed now. (Counters can be published as often as one
    /// likes; histogram samples go to one recorder only, so they are published
    /// when an exporter asks, not on the batches' beat.)
    pub(crate) fn publish(&self, histograms: bool) {
        for (counter, disposition) in
            self.messages
                .iter()
                .zip(["delivered", "dropped", "dead_lettered"])
        {
            metrics::counter!("rustmq_etl_messages_total", "result" => disposition)
                .absolute(counter.load(Ordering::Relaxed));
        }
        // Each map's entries taken out first: handing the histograms'
        // samples to the recorder takes a while (one by one), and the maps'
        // locks are the engine threads' (their own publish) and a reload's.
        //
        // On the batches' beat only the series counted since the beat before
        // are set (the others have not changed): its cost follows the labels
        // in use, not every label since the start (module occurrences a
        // reload removed stay in the maps).
        let unchanged =
            |changed: &AtomicBool| !changed.swap(false, Ordering::AcqRel) && !histograms;
        for (pipeline, totals) in &entries(&self.pipelines) {
            if unchanged(&totals.changed) {
                continue;
            }
            for (counter, result) in totals.results.iter().zip(PIPELINE_RESULTS) {
                metrics::counter!("rustmq_etl_pipeline_messages_total", "pipeline" => pipeline.clone(), "result" => result)
                    .absolute(counter.load(Ordering::Relaxed));
            }
            if histograms {
                totals.time.publish(metrics::histogram!(
                    "rustmq_etl_pipeline_duration_seconds",
                    "pipeline" => pipeline.clone()
                ));
            }
        }
        for ((pipeline, module, settings), totals) in &entries(&self.modules) {
            if unchanged(&totals.changed) {
                continue;
            }
            let mut labels = vec![("pipeline", pipeline.clone()), ("module", module.clone())];
            labels.extend(settings.clone().map(|label| ("settings", label)));
            for (counter, outcome) in totals.outcomes.iter().zip(MODULE_OUTCOMES) {
                let mut labels = labels.to_vec();
                labels.push(("outcome", outcome.to_owned()));
                metrics::counter!("rustmq_etl_module_calls_total", &labels)
                    .absolute(counter.load(Ordering::Relaxed));
            }
            // Every kind, at 0 too, when an exporter asks (so that `rate()`
            // sees a module's first error); on the batches' beat only those
            // counted, which is all that can have changed.
            for (i, kind) in ErrorKind::ALL.iter().enumerate() {
                for (name, counter) in [
                    ("rustmq_etl_module_errors_total", &totals.errors[i]),
                    ("rustmq_etl_dead_letters_total", &totals.dead_letters[i]),
                ] {
                    let n = counter.load(Ordering::Relaxed);
                    if n > 0 || histograms {
                        let mut labels = labels.to_vec();
                        labels.push(("kind", kind.as_str().to_owned()));
                        metrics::counter!(name, &labels).absolute(n);
                    }
                }
            }
            metrics::counter!("rustmq_etl_module_retries_total", &labels)
                .absolute(totals.retries.load(Ordering::Relaxed));
            if histograms {
                totals.time.publish(metrics::histogram!(
                    "rustmq_etl_module_duration_seconds",
                    &labels
                ));
            }
        }
        if !histograms {
            return;
        }
        for ((pipeline, priority), histogram) in &entries(&self.stages) {
            histogram.publish(metrics::histogram!(
                "rustmq_etl_stage_duration_seconds",
                "pipeline" => pipeline.clone(),
                "priority" => priority.to_string()
            ));
        }
        self.selection
            .publish(metrics::histogram!("rustmq_etl_selection_duration_seconds"));
    }
}

impl Tally {
    /// Sized for `plan`.
    pub(crate) fn new(plan: &Plan) -> Self {
        let stages: usize = plan.pipelines().iter().map(|p| p.stages.len()).sum();
        Tally {
            messages: [0; 3],
            pipelines: vec![[0; 5]; plan.pipelines().len()],
            modules: vec![[0; MODULE_COUNTS]; plan.module_count()],
            samples: vec![
                Samples::EMPTY;
                1 + plan.module_count() + stages + plan.pipelines().len()
            ],
            touched_pipelines: Marks::new(plan.pipelines().len()),
            touched_modules: Marks::new(plan.module_count()),
            touched_samples: Vec::new(),
        }
    }

    #[inline]
    fn sample(&mut self, series: usize, time: Duration) {
        if let Some(samples) = self.samples.get_mut(series) {
            if samples.is_empty() {
                self.touched_samples.push(series);
            }
            samples.add(time);
        }
    }

    /// Module `module`'s count `i` (see [`MODULE_COUNTS`]).
    #[inline]
    fn module(&mut self, module: usize, i: usize) {
        self.modules[module][i] += 1;
        self.touched_modules.mark(module);
    }

    pub(crate) fn message(&mut self, disposition: &Disposition) {
        let i = match disposition {
            Disposition::Delivered(_) => 0,
            Disposition::Dropped => 1,
            Disposition::DeadLettered(_) => 2,
        };
        self.messages[i] += 1;
    }

    #[inline]
    pub(crate) fn pipeline(&mut self, pipeline: usize, result: PipelineResult) {
        self.pipelines[pipeline][result as usize] += 1;
        self.touched_pipelines.mark(pipeline);
    }

    #[inline]
    pub(crate) fn call(&mut self, module: usize, result: CallResult, time: Duration) {
        self.module(module, result as usize);
        self.sample(module + 1, time);
    }

    pub(crate) fn error(&mut self, module: usize, kind: ErrorKind) {
        self.module(module, 4 + kind_index(kind));
    }

    pub(crate) fn dead_letter(&mut self, module: usize, kind: ErrorKind) {
        self.module(module, 4 + KINDS + kind_index(kind));
    }

    pub(crate) fn retry(&mut self, module: usize) {
        self.module(module, 4 + 2 * KINDS);
    }

    /// A stage's time: `stage` counts the stages of every pipeline before.
    #[inline]
    pub(crate) fn stage(&mut self, stage: usize, time: Duration) {
        self.sample(self.modules.len() + 1 + stage, time);
    }

    /// A message's time in pipeline `pipeline` (the last series).
    #[inline]
    pub(crate) fn pipeline_time(&mut self, pipeline: usize, time: Duration) {
        let series = self.samples.len() - self.pipelines.len() + pipeline;
        self.sample(series, time);
    }

    #[inline]
    pub(crate) fn selection(&mut self, time: Duration) {
        self.sample(0, time);
    }
}

fn kind_index(kind: ErrorKind) -> usize {
    ErrorKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KINDS - 1)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use rustmq_etl_config::{Config, Format};

    use super::*;

    fn plan() -> Plan {
        // Two pipelines, so that pipelines and stages past the first are
        // counted too; `q`'s stages are declared out of order.
        let yaml = "pipelines:\n\
            - pipeline_id: p\n  stages:\n  - {priority: 0, modules: [{module_id: a}, {module_id: b}]}\n  - {priority: 1, modules: [{module_id: c}]}\n\
            - pipeline_id: q\n  stages:\n  - {priority: 5, modules: [{module_id: e}]}\n  - {priority: 2, modules: [{module_id: d}]}\n";
        Plan::build(&Config::from_text(yaml, Format::Yaml, None).unwrap().config).unwrap()
    }

    /// On the batches' beat only the series counted since the beat before
    /// are set; an exporter's ask sets them all.
    #[test]
    fn the_beat_publishes_only_what_was_counted_since() {
        let plan = plan();
        let stats = Stats::new();
        let table = stats.table(&plan);
        let mut tally = Tally::new(&plan);
        tally.call(0, CallResult::Unchanged, Duration::from_micros(3));
        stats.add(&table, &mut tally);
        let render = |publish: &dyn Fn()| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::with_local_recorder(&recorder, publish);
            handle.render()
        };
        // The line of module `module`'s `unchanged` calls, if set.
        let calls = |text: &str, module: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("rustmq_etl_module_calls_total{")
                        && l.contains(&format!("module=\"{module}\""))
                        && l.contains("outcome=\"unchanged\"")
                })
                .map(|l| l.rsplit(' ').next().unwrap().to_owned())
        };
        let first = render(&|| stats.publish(false));
        assert_eq!(calls(&first, "a").as_deref(), Some("1"), "{first}");
        assert_eq!(calls(&first, "b"), None, "b was not counted: {first}");
        // Nothing counted since: the beat sets nothing of module a.
        let quiet = render(&|| stats.publish(false));
        assert_eq!(calls(&quiet, "a"), None, "{quiet}");
        // Counted again: set again, whole.
        tally.call(0, CallResult::Unchanged, Duration::from_micros(3));
        stats.add(&table, &mut tally);
        let again = render(&|| stats.publish(false));
        assert_eq!(calls(&again, "a").as_deref(), Some("2"), "{again}");
        // An exporter's ask: everything, module b's zeros included.
        let asked = render(&|| stats.publish(true));
        assert_eq!(calls(&asked, "a").as_deref(), Some("2"), "{asked}");
        assert_eq!(calls(&asked, "b").as_deref(), Some("0"), "{asked}");
    }

    proptest! {
        /// Batches of samples added to the totals (only the touched buckets,
        /// then cleared) leave every histogram with a plain count's totals.
        #[test]
        fn histogram_totals_are_the_sum_of_every_batch(
            batches in prop::collection::vec(
                prop::collection::vec((0usize..10, 0u64..1u64 << 42), 0..40),
                1..6,
            )
        ) {
            let plan = plan();
            let stats = Stats::new();
            let table = stats.table(&plan);
            let mut tally = Tally::new(&plan);
            let mut reference: HashMap<(usize, usize), u64> = HashMap::new();
            // Series: 0 selection, 1..=5 the modules, 6..=9 the stages.
            for batch in &batches {
                for &(series, ns) in batch {
                    let time = Duration::from_nanos(ns);
                    match series {
                        0 => tally.selection(time),
                        1..=5 => tally.call(series - 1, CallResult::Unchanged, time),
                        _ => tally.stage(series - 6, time),
                    }
                    *reference.entry((series, bucket(time))).or_default() += 1;
                }
                stats.add(&table, &mut tally);
                prop_assert!(tally
                    .samples
                    .iter()
                    .all(|s| s.counts.iter().all(|n| *n == 0) && s.is_empty()));
                prop_assert!(tally.touched_samples.is_empty());
            }
            let histograms: Vec<&Histogram> = std::iter::once(&stats.selection)
                .chain(table.modules.iter().map(|m| &m.time))
                .chain(table.stages.iter().map(|h| &**h))
                .collect();
            prop_assert_eq!(histograms.len(), 10);
            for (series, histogram) in histograms.iter().enumerate() {
                for (i, total) in histogram.buckets.iter().enumerate() {
                    let expected = reference.get(&(series, i)).copied().unwrap_or(0);
                    prop_assert_eq!(total.load(Ordering::Relaxed), expected, "series {} bucket {}", series, i);
                }
            }
        }
    }

    proptest! {
        /// Counts of every kind, in batches added to the totals (only the
        /// pipelines and modules a batch counted for are visited), leave
        /// every counter with a plain count's total and the tally empty.
        #[test]
        fn counter_totals_are_the_sum_of_every_batch(
            batches in prop::collection::vec(
                prop::collection::vec((0usize..5, 0usize..5, 0usize..ErrorKind::ALL.len()), 0..30),
                1..6,
            )
        ) {
            let plan = plan();
            let stats = Stats::new();
            let table = stats.table(&plan);
            let mut tally = Tally::new(&plan);
            // (what, index, which) → count; `what`: 0 pipeline result, 1 call
            // outcome, 2 error, 3 dead letter, 4 retry.
            let mut reference: HashMap<(usize, usize, usize), u64> = HashMap::new();
            let results = [
                PipelineResult::Processed,
                PipelineResult::Delivered,
                PipelineResult::Stopped,
                PipelineResult::Dropped,
                PipelineResult::DeadLettered,
            ];
            let outcomes = [CallResult::Unchanged, CallResult::Edited, CallResult::Dropped, CallResult::Failed];
            for batch in &batches {
                for &(what, module, k) in batch {
                    let kind = ErrorKind::ALL[k];
                    let key = match what {
                        0 => {
                            tally.pipeline(module % 2, results[k % 5]);
                            (0, module % 2, k % 5)
                        }
                        1 => {
                            tally.call(module, outcomes[k % 4], Duration::from_nanos(100));
                            (1, module, k % 4)
                        }
                        2 => {
                            tally.error(module, kind);
                            (2, module, k)
                        }
                        3 => {
                            tally.dead_letter(module, kind);
                            (3, module, k)
                        }
                        _ => {
                            tally.retry(module);
                            (4, module, 0)
                        }
                    };
                    *reference.entry(key).or_default() += 1;
                }
                stats.add(&table, &mut tally);
                prop_assert!(tally.pipelines.iter().flatten().all(|n| *n == 0));
                prop_assert!(tally.modules.iter().flatten().all(|n| *n == 0));
                prop_assert!(tally.touched_pipelines.list.is_empty() && tally.touched_modules.list.is_empty());
                prop_assert!(!tally.touched_pipelines.marked.iter().chain(&tally.touched_modules.marked).any(|m| *m));
                prop_assert!(tally.touched_samples.is_empty());
            }
            let count = |key| reference.get(&key).copied().unwrap_or(0);
            for (p, totals) in table.pipelines.iter().enumerate() {
                for (i, counter) in totals.results.iter().enumerate() {
                    prop_assert_eq!(counter.load(Ordering::Relaxed), count((0, p, i)), "pipeline {} result {}", p, i);
                }
            }
            for (m, totals) in table.modules.iter().enumerate() {
                for (i, counter) in totals.outcomes.iter().enumerate() {
                    prop_assert_eq!(counter.load(Ordering::Relaxed), count((1, m, i)), "module {} outcome {}", m, i);
                }
                for k in 0..ErrorKind::ALL.len() {
                    prop_assert_eq!(totals.errors[k].load(Ordering::Relaxed), count((2, m, k)), "module {} error {}", m, k);
                    prop_assert_eq!(totals.dead_letters[k].load(Ordering::Relaxed), count((3, m, k)), "module {} dead letter {}", m, k);
                }
                prop_assert_eq!(totals.retries.load(Ordering::Relaxed), count((4, m, 0)), "module {} retries", m);
            }
        }
    }

    /// `bucket` as first written: from the whole `u128` of nanoseconds.
    fn reference_bucket(time: Duration) -> usize {
        let ns = time.as_nanos().min(u128::from(u64::MAX)) as u64;
        if ns < 4 {
            return ns as usize;
        }
        let power = 63 - ns.leading_zeros() as usize;
        let quarter = ((ns >> (power - 2)) & 3) as usize;
        (power * 4 + quarter).min(BUCKETS - 1)
    }

    proptest! {
        #[test]
        fn bucket_agrees_with_the_reference(
            secs in prop_oneof![0u64..4, 0u64..2_000, 1u64 << 29..1u64 << 31, any::<u64>()],
            nanos in prop_oneof![0u32..8, 0u32..1_000_000_000],
        ) {
            let time = Duration::new(secs, nanos);
            prop_assert_eq!(bucket(time), reference_bucket(time));
        }
    }

    #[test]
    fn buckets_grow_by_quarters_of_a_power_of_two() {
        assert_eq!(bucket(Duration::from_nanos(3)), 3);
        assert_eq!(bucket(Duration::from_nanos(4)), 8);
        assert_eq!(bucket(Duration::from_nanos(1024)), 40);
        assert_eq!(bucket(Duration::from_nanos(1024 + 256)), 41);
        assert_eq!(bucket(Duration::from_secs(100_000)), BUCKETS - 1);
    }

    proptest! {
        /// A sample is published as its bucket's middle: within half the
        /// bucket's width (a quarter of its power of two) of the sample, and
        /// so within 12.5% of it.
        #[test]
        fn a_sample_is_published_as_its_buckets_middle(ns in 4u64..1 << 40) {
            let published = bucket_seconds(bucket(Duration::from_nanos(ns))) * 1e9;
            let power = 63 - ns.leading_zeros();
            let width = (1u64 << power) as f64 / 4.0;
            let low = ns - ns % (1u64 << (power - 2));
            // (Within a rounding of the seconds' `f64` and back.)
            prop_assert!((published - (low as f64 + width / 2.0)).abs() < 1e-6 * published);
            prop_assert!((published - ns as f64).abs() <= ns as f64 * 0.125 * (1.0 + 1e-9));
        }
    }
}
