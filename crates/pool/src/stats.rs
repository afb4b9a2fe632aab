//! Pool statistics: counters per module, read as data and published to the
//! `metrics` facade.
//!
//! The hot path only counts, into its thread's shard; [`Counters::publish`]
//! sums the shards and sets the `metrics` counters to their totals (and the
//! gauges to their levels), looking the handles up each time. So recording does
//! not depend on when the process installs its recorder: the next publish
//! (every worker publishes on its cleaner's beat, and
//! [`Pool::publish_metrics`](crate::Pool::publish_metrics) on demand) reaches
//! whatever recorder is installed then.
//!
//! Every version of a module occurrence (a reload) has counters of its own,
//! but they share the occurrence's labels: `module`, and `settings` for
//! settings other than the defaults (`ModuleSettings::label`), which tells
//! occurrences of one `module_id` apart. So the series of a label set are
//! published for its whole [`Family`]:
//! the totals of the versions gone (added when their counters are dropped)
//! plus those of the live ones, and never less than what was published
//! before. A Prometheus counter does not go back when a module is swapped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use rustmq_etl_core::ErrorKind;

const KINDS: &[ErrorKind] = ErrorKind::ALL;

/// The statistics of one module version: one [`Shard`] per thread that runs
/// it, summed when read.
#[derive(Debug)]
pub(crate) struct Counters {
    /// The labels: `module`, and `settings` unless the settings are the
    /// defaults.
    labels: Labels,
    /// The occurrence's limits, published beside its levels.
    limits: Limits,
    shards: Mutex<Vec<Arc<Shard>>>,
    /// The counts of the shards of threads' pools gone (a caller's runner
    /// dropped), added as each goes (under the shards' lock), so that a
    /// thread's pool made again and again adds no shard for good.
    retired: Shard,
    /// Guest log lines past the per-call limit (counted by the instances).
    log_lines_dropped: Arc<AtomicU64>,
    /// Everything else in this process published under the same label.
    family: Arc<Family>,
}

/// An occurrence's labels (`ModuleSpec::labels`).
type Labels = Vec<(&'static str, String)>;

/// An occurrence's limits (its `instance_config`), published as gauges so
/// that the levels can be read against them (pool exhaustion, memory near
/// its cap).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    /// `max_concurrent_instances`.
    pub(crate) instances: u32,
    /// `memory_limit_bytes`, per instance.
    pub(crate) memory_bytes: usize,
}

/// The counters of every version of one occurrence's labels in the process,
/// published together.
#[derive(Debug, Default)]
pub(crate) struct Family {
    state: Mutex<FamilyState>,
}

#[derive(Debug, Default)]
struct FamilyState {
    live: Vec<Weak<Counters>>,
    /// The totals of the counters dropped so far (no levels: a dropped
    /// version has no instances).
    retired: ModuleStats,
    /// What was last published, so that no counter is published lower.
    published: ModuleStats,
}

/// The process's families, by labels.
fn family(labels: &Labels) -> Arc<Family> {
    static FAMILIES: OnceLock<Mutex<HashMap<Labels, Arc<Family>>>> = OnceLock::new();
    FAMILIES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(labels.clone())
        .or_default()
        .clone()
}

impl ModuleStats {
    /// Adds `other`'s counts (and levels) to these.
    fn add(&mut self, other: &ModuleStats) {
        self.calls += other.calls;
        self.hits += other.hits;
        self.misses += other.misses;
        self.creations += other.creations;
        self.evictions += other.evictions;
        self.discards += other.discards;
        self.log_lines_dropped += other.log_lines_dropped;
        self.in_use += other.in_use;
        self.idle += other.idle;
        self.memory_bytes += other.memory_bytes;
        self.largest_memory_bytes = self.largest_memory_bytes.max(other.largest_memory_bytes);
        for (kind, n) in &other.failures {
            match self.failures.iter_mut().find(|(k, _)| k == kind) {
                Some((_, total)) => *total += n,
                None => self.failures.push((*kind, *n)),
            }
        }
    }

    /// Each count at least `floor`'s (levels are left as they are).
    fn at_least(&mut self, floor: &ModuleStats) {
        self.calls = self.calls.max(floor.calls);
        self.hits = self.hits.max(floor.hits);
        self.misses = self.misses.max(floor.misses);
        self.creations = self.creations.max(floor.creations);
        self.evictions = self.evictions.max(floor.evictions);
        self.discards = self.discards.max(floor.discards);
        self.log_lines_dropped = self.log_lines_dropped.max(floor.log_lines_dropped);
        for (kind, n) in &floor.failures {
            match self.failures.iter_mut().find(|(k, _)| k == kind) {
                Some((_, total)) => *total = (*total).max(*n),
                None => self.failures.push((*kind, *n)),
            }
        }
    }
}

impl Family {
    fn lock(&self) -> std::sync::MutexGuard<'_, FamilyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the series of `labels` (with `limits`) under the recorder
    /// installed now.
    fn publish(&self, labels: &Labels, limits: Limits) {
        // Declared before the guard, so dropped after it (on an unwinding
        // panic too): the last reference to a version must not be dropped
        // while the lock is held, as its `drop` takes this lock. A version
        // dropped meanwhile is missing from this sum until it is retired,
        // and `published` keeps the counters from going back.
        let live: Vec<Arc<Counters>>;
        let mut state = self.lock();
        live = state.live.iter().filter_map(Weak::upgrade).collect();
        let mut stats = state.retired.clone();
        for counters in &live {
            stats.add(&counters.snapshot());
        }
        stats.at_least(&state.published);
        let counter = |name: &'static str, value: u64| {
            metrics::counter!(name, labels).absolute(value);
        };
        counter("rustmq_etl_pool_calls_total", stats.calls);
        counter("rustmq_etl_pool_hits_total", stats.hits);
        counter("rustmq_etl_pool_misses_total", stats.misses);
        counter("rustmq_etl_pool_instances_created_total", stats.creations);
        counter("rustmq_etl_pool_instances_evicted_total", stats.evictions);
        counter("rustmq_etl_pool_instances_discarded_total", stats.discards);
        counter(
            "rustmq_etl_guest_log_lines_dropped_total",
            stats.log_lines_dropped,
        );
        // Every kind a call can fail with here, at 0 too, so that `rate()`
        // sees the first (a breaker's refusal is the orchestrator's, never
        // a call's here).
        for &kind in ErrorKind::ALL
            .iter()
            .filter(|kind| **kind != ErrorKind::CircuitOpen)
        {
            let n = stats.failures_of(kind);
            let mut labels = labels.clone();
            labels.push(("kind", kind.as_str().to_owned()));
            metrics::counter!("rustmq_etl_pool_failures_total", &labels).absolute(n);
        }
        metrics::gauge!("rustmq_etl_pool_instances_in_use", labels).set(stats.in_use as f64);
        metrics::gauge!("rustmq_etl_pool_instances_idle", labels).set(stats.idle as f64);
        metrics::gauge!("rustmq_etl_pool_instances_limit", labels).set(f64::from(limits.instances));
        metrics::gauge!("rustmq_etl_pool_memory_bytes", labels).set(stats.memory_bytes as f64);
        metrics::gauge!("rustmq_etl_pool_instance_memory_max_bytes", labels)
            .set(stats.largest_memory_bytes as f64);
        metrics::gauge!("rustmq_etl_pool_instance_memory_limit_bytes", labels)
            .set(limits.memory_bytes as f64);
        state.published = stats;
    }
}

/// One thread's share of a module's statistics. Only that thread writes it, so
/// an update is a plain load and store: no locked instruction on the call path
/// and no cache line bouncing between worker threads. Anyone may read it.
#[derive(Debug, Default)]
pub(crate) struct Shard {
    calls: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    creations: AtomicU64,
    evictions: AtomicU64,
    discards: AtomicU64,
    in_use: AtomicI64,
    idle: AtomicI64,
    /// The linear memory of the thread's instances, all and the largest, as
    /// of its last look (set, not counted).
    memory_bytes: AtomicU64,
    largest_memory_bytes: AtomicU64,
    failures: [AtomicU64; KINDS.len()],
}

/// A snapshot of one module's pool statistics (`non_exhaustive`: read its
/// fields; more may come).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModuleStats {
    /// Calls made.
    pub calls: u64,
    /// Calls served by a warm instance.
    pub hits: u64,
    /// Calls that needed a new instance.
    pub misses: u64,
    /// Instances created (warm-up included).
    pub creations: u64,
    /// Healthy instances dropped: idle past their time-to-live, recycled after
    /// their call budget, a module's without caching after each call, those
    /// of a version nothing holds any more, and a thread's when its pool is
    /// dropped.
    pub evictions: u64,
    /// Instances thrown away after a trap, timeout, memory-limit hit or invalid answer.
    pub discards: u64,
    /// Instances running a call now.
    pub in_use: u64,
    /// Instances waiting for a call now.
    pub idle: u64,
    /// Failed calls by kind, and failed instance starts of a warm-up (which
    /// are not calls) by theirs.
    pub failures: Vec<(ErrorKind, u64)>,
    /// Guest log lines dropped past the per-call limit.
    pub log_lines_dropped: u64,
    /// The linear memory of the module's instances, in bytes, as of each
    /// pool thread's last look (between calls, every cleaning interval).
    pub memory_bytes: u64,
    /// The largest instance's linear memory, in bytes, as of the same looks.
    pub largest_memory_bytes: u64,
}

impl ModuleStats {
    /// Failed calls of one kind.
    pub fn failures_of(&self, kind: ErrorKind) -> u64 {
        self.failures
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

impl Counters {
    /// The counters of a new version of an occurrence with `labels`
    /// (`ModuleSpec::labels`), joined to their family.
    pub(crate) fn new(
        labels: Labels,
        limits: Limits,
        log_lines_dropped: Arc<AtomicU64>,
    ) -> Arc<Self> {
        let family = family(&labels);
        let counters = Arc::new(Counters {
            labels,
            limits,
            shards: Mutex::new(Vec::new()),
            retired: Shard::default(),
            log_lines_dropped,
            family: family.clone(),
        });
        let mut state = family.lock();
        state.live.retain(|c| c.strong_count() > 0);
        state.live.push(Arc::downgrade(&counters));
        drop(state);
        counters
    }

    /// A new shard for one thread's use of this module.
    pub(crate) fn shard(self: &Arc<Self>) -> Recorder {
        let shard = Arc::new(Shard::default());
        self.lock().push(shard.clone());
        Recorder {
            counters: self.clone(),
            shard,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Shard>>> {
        self.shards.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn snapshot(&self) -> ModuleStats {
        let live = self.lock();
        // The shards of the threads' pools gone count too (their levels are
        // 0: a pool gone holds no instance).
        let shards: Vec<&Shard> = live
            .iter()
            .map(|s| &**s)
            .chain(std::iter::once(&self.retired))
            .collect();
        let sum = |field: fn(&Shard) -> &AtomicU64| -> u64 {
            shards
                .iter()
                .map(|s| field(s).load(Ordering::Relaxed))
                .sum()
        };
        let level = |field: fn(&Shard) -> &AtomicI64| -> u64 {
            shards
                .iter()
                .map(|s| field(s).load(Ordering::Relaxed))
                .sum::<i64>()
                .max(0) as u64
        };
        ModuleStats {
            calls: sum(|s| &s.calls),
            hits: sum(|s| &s.hits),
            misses: sum(|s| &s.misses),
            creations: sum(|s| &s.creations),
            evictions: sum(|s| &s.evictions),
            discards: sum(|s| &s.discards),
            in_use: level(|s| &s.in_use),
            idle: level(|s| &s.idle),
            failures: KINDS
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let n = shards
                        .iter()
                        .map(|s| s.failures[i].load(Ordering::Relaxed))
                        .sum();
                    (*k, n)
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
            log_lines_dropped: self.log_lines_dropped.load(Ordering::Relaxed),
            memory_bytes: sum(|s| &s.memory_bytes),
            largest_memory_bytes: shards
                .iter()
                .map(|s| s.largest_memory_bytes.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0),
        }
    }

    /// Sets the `metrics` counters of this occurrence's labels to its
    /// family's totals and the gauges to their levels, under the recorder
    /// installed now.
    pub(crate) fn publish(&self) {
        self.family.publish(&self.labels, self.limits);
    }
}

/// Gives the recorder installed now each of the pool's series' help text
/// (the `# HELP` lines of Prometheus text).
pub(crate) fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_counter!(
        "rustmq_etl_pool_calls_total",
        "Calls of a module occurrence."
    );
    describe_counter!(
        "rustmq_etl_pool_hits_total",
        "Calls served by a warm instance."
    );
    describe_counter!(
        "rustmq_etl_pool_misses_total",
        "Calls that needed a new instance."
    );
    describe_counter!(
        "rustmq_etl_pool_instances_created_total",
        "Instances created."
    );
    describe_counter!(
        "rustmq_etl_pool_instances_evicted_total",
        "Instances dropped whole: idle past their time, recycled after recycle_after_calls, an uncached module's after its call, or of a version replaced."
    );
    describe_counter!(
        "rustmq_etl_pool_instances_discarded_total",
        "Instances thrown away after a call that failed otherwise than with the module's own error (guest_error): their state is not trusted."
    );
    describe_counter!(
        "rustmq_etl_pool_failures_total",
        "Failed calls by error kind."
    );
    describe_counter!(
        "rustmq_etl_guest_log_lines_dropped_total",
        "Guest log lines past the 32 a call may write."
    );
    describe_gauge!(
        "rustmq_etl_pool_instances_in_use",
        "Instances running a call."
    );
    describe_gauge!(
        "rustmq_etl_pool_instances_idle",
        "Warm instances waiting for a call."
    );
    describe_gauge!(
        "rustmq_etl_pool_instances_limit",
        "The occurrence's max_concurrent_instances."
    );
    describe_gauge!(
        "rustmq_etl_pool_memory_bytes",
        Unit::Bytes,
        "Linear memory of the occurrence's instances, as of the last look."
    );
    describe_gauge!(
        "rustmq_etl_pool_instance_memory_max_bytes",
        Unit::Bytes,
        "Linear memory of the occurrence's largest instance."
    );
    describe_gauge!(
        "rustmq_etl_pool_instance_memory_limit_bytes",
        Unit::Bytes,
        "The occurrence's memory_limit_bytes per instance."
    );
    describe_gauge!(
        "rustmq_etl_pool_caller_runners",
        "Callers' threads holding a runner of their own (Pool::caller_runner, OnThisThread)."
    );
    describe_gauge!(
        "rustmq_etl_pool_caller_runners_limit",
        "The most callers' threads that may hold one at once (caller_threads)."
    );
}

impl Drop for Counters {
    fn drop(&mut self) {
        let mut last = self.snapshot();
        (last.in_use, last.idle) = (0, 0);
        (last.memory_bytes, last.largest_memory_bytes) = (0, 0);
        let mut state = self.family.lock();
        state.retired.add(&last);
        state.live.retain(|c| c.strong_count() > 0);
    }
}

/// A module's statistics, apart from the module: keeping it does not keep the
/// module or its instances alive.
#[derive(Debug, Clone)]
pub struct Statistics(pub(crate) Arc<Counters>);

impl Statistics {
    /// The statistics so far.
    pub fn snapshot(&self) -> ModuleStats {
        self.0.snapshot()
    }
}

/// What one thread records into its [`Shard`] of a module's statistics.
#[derive(Debug)]
pub(crate) struct Recorder {
    counters: Arc<Counters>,
    shard: Arc<Shard>,
}

impl Drop for Recorder {
    /// The thread's pool lets go of the module: its counts go to the
    /// retired ones and its shard out of the list, in one step under the
    /// lock, so that a reading never counts them twice or not at all.
    fn drop(&mut self) {
        let counters = &self.counters;
        let mut shards = counters.lock();
        shards.retain(|s| !Arc::ptr_eq(s, &self.shard));
        let (gone, retired) = (&*self.shard, &counters.retired);
        let add = |to: &AtomicU64, from: &AtomicU64| {
            to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        add(&retired.calls, &gone.calls);
        add(&retired.hits, &gone.hits);
        add(&retired.misses, &gone.misses);
        add(&retired.creations, &gone.creations);
        add(&retired.evictions, &gone.evictions);
        add(&retired.discards, &gone.discards);
        for (to, from) in retired.failures.iter().zip(&gone.failures) {
            add(to, from);
        }
        // Levels: 0 once the pool's instances are gone, as they are by now
        // (`Slot`'s drop); kept whole all the same.
        retired
            .in_use
            .fetch_add(gone.in_use.load(Ordering::Relaxed), Ordering::Relaxed);
        retired
            .idle
            .fetch_add(gone.idle.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

impl Recorder {
    fn bump(counter: &AtomicU64, by: u64) {
        // Single writer: a load and a store, not a locked read-modify-write.
        counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
    }

    fn shift(level: &AtomicI64, delta: i64) {
        level.store(level.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    pub(crate) fn call(&self, hit: bool) {
        let shard = &*self.shard;
        Self::bump(&shard.calls, 1);
        Self::bump(if hit { &shard.hits } else { &shard.misses }, 1);
    }

    pub(crate) fn created(&self) {
        Self::bump(&self.shard.creations, 1);
    }

    pub(crate) fn evicted(&self, n: u64) {
        Self::bump(&self.shard.evictions, n);
    }

    pub(crate) fn discarded(&self) {
        Self::bump(&self.shard.discards, 1);
    }

    pub(crate) fn failed(&self, kind: ErrorKind) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            Self::bump(&self.shard.failures[i], 1);
        }
    }

    pub(crate) fn in_use(&self, delta: i64) {
        Self::shift(&self.shard.in_use, delta);
    }

    pub(crate) fn idle(&self, delta: i64) {
        Self::shift(&self.shard.idle, delta);
    }

    /// The linear memory of this thread's instances now: all and the largest.
    pub(crate) fn memory(&self, all: u64, largest: u64) {
        self.shard.memory_bytes.store(all, Ordering::Relaxed);
        self.shard
            .largest_memory_bytes
            .store(largest, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread's shard, once its recorder is dropped, leaves the list and
    /// its counts stay in the totals: pools made and dropped again and again
    /// (callers' runners) neither lose counts nor grow the list.
    #[test]
    fn a_dropped_recorders_counts_are_kept_and_its_shard_let_go() {
        let labels = vec![("module", "a_dropped_recorders_counts".to_owned())];
        let counters = Counters::new(labels, Limits::default(), Arc::default());
        for _ in 0..100 {
            let recorder = counters.shard();
            recorder.call(true);
            recorder.failed(ErrorKind::Trap);
            recorder.idle(1);
            recorder.idle(-1);
        }
        let kept = counters.shard();
        kept.call(false);
        kept.idle(1);
        assert_eq!(counters.lock().len(), 1, "only the live shard is listed");
        let stats = counters.snapshot();
        assert_eq!(
            (stats.calls, stats.hits, stats.misses, stats.idle),
            (101, 100, 1, 1)
        );
        assert_eq!(stats.failures_of(ErrorKind::Trap), 100);
    }
}
