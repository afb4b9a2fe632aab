//! Pool statistics: counters per module, read as data and mirrored to the
//! `metrics` facade.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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

/// Live counters of one module, shared by the worker threads.
#[derive(Debug)]
pub(crate) struct Counters {
    metrics: Handles,
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
            calls: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            creations: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            discards: AtomicU64::new(0),
            in_use: AtomicI64::new(0),
            idle: AtomicI64::new(0),
            failures: Default::default(),
        }
    }

    fn bump(counter: &AtomicU64, handle: &metrics::Counter, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
        handle.increment(by);
    }

    pub(crate) fn call(&self, hit: bool) {
        Self::bump(&self.calls, &self.metrics.calls, 1);
        if hit {
            Self::bump(&self.hits, &self.metrics.hits, 1);
        } else {
            Self::bump(&self.misses, &self.metrics.misses, 1);
        }
    }

    pub(crate) fn created(&self) {
        Self::bump(&self.creations, &self.metrics.creations, 1);
    }

    pub(crate) fn evicted(&self, n: u64) {
        if n > 0 {
            Self::bump(&self.evictions, &self.metrics.evictions, n);
        }
    }

    pub(crate) fn discarded(&self) {
        Self::bump(&self.discards, &self.metrics.discards, 1);
    }

    pub(crate) fn failed(&self, kind: ErrorKind) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            Self::bump(&self.failures[i], &self.metrics.failures[i], 1);
        }
    }

    pub(crate) fn in_use(&self, delta: i64) {
        self.in_use.fetch_add(delta, Ordering::Relaxed);
        self.metrics.in_use.increment(delta as f64);
    }

    pub(crate) fn idle(&self, delta: i64) {
        self.idle.fetch_add(delta, Ordering::Relaxed);
        self.metrics.idle.increment(delta as f64);
    }

    pub(crate) fn snapshot(&self) -> ModuleStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ModuleStats {
            calls: load(&self.calls),
            hits: load(&self.hits),
            misses: load(&self.misses),
            creations: load(&self.creations),
            evictions: load(&self.evictions),
            discards: load(&self.discards),
            in_use: self.in_use.load(Ordering::Relaxed).max(0) as u64,
            idle: self.idle.load(Ordering::Relaxed).max(0) as u64,
            failures: KINDS
                .iter()
                .zip(&self.failures)
                .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}
