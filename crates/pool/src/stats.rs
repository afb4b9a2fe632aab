//! Pool statistics: counters per module, read as data and mirrored to the
//! `metrics` facade.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::ErrorKind;

const KINDS: [ErrorKind; 8] = [
    ErrorKind::Timeout,
    ErrorKind::MemoryLimit,
    ErrorKind::Trap,
    ErrorKind::InvalidOutput,
    ErrorKind::Guest,
    ErrorKind::Init,
    ErrorKind::NotFound,
    ErrorKind::ShutDown,
];

/// Handles into the `metrics` recorder, registered once per module so that the
/// hot path neither allocates labels nor looks keys up. (Install the recorder
/// before loading modules: handles made earlier go to the no-op recorder.)
struct Handles {
    calls: metrics::Counter,
    hits: metrics::Counter,
    misses: metrics::Counter,
    creations: metrics::Counter,
    evictions: metrics::Counter,
    discards: metrics::Counter,
    failures: [metrics::Counter; KINDS.len()],
    in_use: metrics::Gauge,
    idle: metrics::Gauge,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handles")
    }
}

/// The statistics of one module version: one [`Shard`] per thread that runs
/// it, summed when read.
#[derive(Debug)]
pub(crate) struct Counters {
    metrics: Handles,
    shards: Mutex<Vec<Arc<Shard>>>,
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
    failures: [AtomicU64; KINDS.len()],
}

/// A snapshot of one module's pool statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// their call budget, or replaced by a new module version.
    pub evictions: u64,
    /// Instances thrown away after a trap, timeout, memory-limit hit or invalid answer.
    pub discards: u64,
    /// Instances running a call now.
    pub in_use: u64,
    /// Instances waiting for a call now.
    pub idle: u64,
    /// Failed calls by kind.
    pub failures: Vec<(ErrorKind, u64)>,
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
    pub(crate) fn new(module: &str) -> Self {
        let counter = |name: &'static str| metrics::counter!(name, "module" => module.to_owned());
        let gauge = |name: &'static str| metrics::gauge!(name, "module" => module.to_owned());
        Counters {
            metrics: Handles {
                calls: counter("rustmq_etl_pool_calls_total"),
                hits: counter("rustmq_etl_pool_hits_total"),
                misses: counter("rustmq_etl_pool_misses_total"),
                creations: counter("rustmq_etl_pool_instances_created_total"),
                evictions: counter("rustmq_etl_pool_instances_evicted_total"),
                discards: counter("rustmq_etl_pool_instances_discarded_total"),
                failures: KINDS.map(|kind| {
                    metrics::counter!("rustmq_etl_pool_failures_total", "module" => module.to_owned(), "kind" => kind.as_str())
                }),
                in_use: gauge("rustmq_etl_pool_instances_in_use"),
                idle: gauge("rustmq_etl_pool_instances_idle"),
            },
            shards: Mutex::new(Vec::new()),
        }
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
        let shards = self.lock();
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
        }
    }

    /// Sets the `metrics` gauges to the module's current levels. Gauges are
    /// published like this, on the cleaner's beat, rather than moved twice per
    /// call; counters go to `metrics` as they happen.
    pub(crate) fn publish_levels(&self) {
        let stats = self.snapshot();
        self.metrics.in_use.set(stats.in_use as f64);
        self.metrics.idle.set(stats.idle as f64);
    }
}

/// What one thread records into its [`Shard`] of a module's statistics.
#[derive(Debug)]
pub(crate) struct Recorder {
    counters: Arc<Counters>,
    shard: Arc<Shard>,
}

impl Recorder {
    fn bump(counter: &AtomicU64, handle: &metrics::Counter, by: u64) {
        // Single writer: a load and a store, not a locked read-modify-write.
        counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
        handle.increment(by);
    }

    fn shift(level: &AtomicI64, delta: i64) {
        level.store(level.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    pub(crate) fn call(&self, hit: bool) {
        let (shard, handles) = (&*self.shard, &self.counters.metrics);
        Self::bump(&shard.calls, &handles.calls, 1);
        if hit {
            Self::bump(&shard.hits, &handles.hits, 1);
        } else {
            Self::bump(&shard.misses, &handles.misses, 1);
        }
    }

    pub(crate) fn created(&self) {
        Self::bump(&self.shard.creations, &self.counters.metrics.creations, 1);
    }

    pub(crate) fn evicted(&self, n: u64) {
        if n > 0 {
            Self::bump(&self.shard.evictions, &self.counters.metrics.evictions, n);
        }
    }

    pub(crate) fn discarded(&self) {
        Self::bump(&self.shard.discards, &self.counters.metrics.discards, 1);
    }

    pub(crate) fn failed(&self, kind: ErrorKind) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            Self::bump(
                &self.shard.failures[i],
                &self.counters.metrics.failures[i],
                1,
            );
        }
    }

    pub(crate) fn in_use(&self, delta: i64) {
        Self::shift(&self.shard.in_use, delta);
    }

    pub(crate) fn idle(&self, delta: i64) {
        Self::shift(&self.shard.idle, delta);
    }
}
