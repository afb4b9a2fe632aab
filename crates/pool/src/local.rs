//! The instances of one thread: warm instances per module version, reused,
//! recycled, evicted when idle too long or when nothing holds the version any
//! more, discarded after a failure.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;
use rustmq_etl_core::{Busy, CallReport, CallRequest, ErrorKind, ModuleRunner, ModuleSpec};

use crate::error::{discards_instance, CallError};
use crate::instance::WarmInstance;
use crate::module::CompiledModule;
use crate::stats::{Counters, Recorder};

/// How long a call that found its module at `max_concurrent_instances` waits
/// before it tries again.
const RETRY_WHEN_FULL: Duration = Duration::from_millis(1);

/// A compiled module version, ready to be run by a [`LocalPool`] or a
/// [`Pool`](crate::Pool). Cheap to clone. A thread's instances of it outlive
/// the last clone until that thread's next [`LocalPool::evict_idle`] (a
/// `Pool`'s workers run it every cleaning interval).
#[derive(Clone, Debug)]
pub struct LoadedModule {
    pub(crate) compiled: Arc<CompiledModule>,
    pub(crate) counters: Arc<Counters>,
    /// Calls of this version running now, on every thread.
    running: Arc<AtomicU32>,
    /// Whether `running` must be kept: a pool whose threads cannot outnumber
    /// `max_concurrent_instances` skips the two shared atomics per call.
    limit_running: bool,
}

impl LoadedModule {
    /// Checks `wasm` against the sandbox's rules, compiles it (or loads it
    /// from the settings' cache) and checks its ABI. Nothing runs yet: the
    /// first instance starts on the first call (or [`LocalPool::warm`]).
    pub fn compile(
        spec: &ModuleSpec,
        wasm: &[u8],
        settings: &crate::CompileSettings,
    ) -> Result<LoadedModule, crate::LoadError> {
        use std::sync::atomic::AtomicU64;
        static VERSIONS: AtomicU64 = AtomicU64::new(1);
        let version = VERSIONS.fetch_add(1, Ordering::Relaxed);
        let compiled = crate::module::compile(spec, version, wasm, settings)?;
        Ok(LoadedModule {
            counters: Counters::new(
                compiled.labels.clone(),
                crate::stats::Limits {
                    instances: compiled.settings.max_concurrent_instances,
                    memory_bytes: compiled.settings.memory_limit_bytes,
                },
                compiled.log_lines_dropped.clone(),
            ),
            compiled: Arc::new(compiled),
            running: Arc::default(),
            limit_running: true,
        })
    }

    /// Declares that at most `threads` threads (each with its own
    /// [`LocalPool`]) run this module. A thread runs one call at a time, so
    /// when `threads` is within the module's `max_concurrent_instances`, its
    /// calls need not be counted across threads, which saves two shared
    /// atomic operations per call. [`Pool`](crate::Pool) declares its workers
    /// and its callers' threads together (`workers + caller_threads`), so
    /// the runners [`Pool::caller_runner`](crate::Pool::caller_runner) hands
    /// out are counted in; a module compiled without a declaration is
    /// counted. The declaration holds for every clone: a module a `Pool`
    /// loaded must not also be run on a `LocalPool` of the caller's own
    /// making, or its limit may be exceeded.
    pub fn run_by_threads(mut self, threads: usize) -> Self {
        self.limit_running =
            (self.compiled.settings.max_concurrent_instances.max(1) as usize) < threads;
        self
    }

    /// The module's id.
    pub fn id(&self) -> &str {
        &self.compiled.id
    }

    /// This version's number: every compile makes a new one.
    pub fn version(&self) -> u64 {
        self.compiled.version
    }

    /// Which ABI the module speaks.
    pub fn abi(&self) -> crate::Abi {
        self.compiled.abi
    }

    /// Whether the compiled code came from the artifact cache.
    pub fn from_cache(&self) -> bool {
        self.compiled.from_cache
    }

    /// This module's pool statistics so far.
    pub fn stats(&self) -> crate::ModuleStats {
        self.counters.snapshot()
    }

    /// A handle to this module's statistics that does not keep the module
    /// (or its instances) alive.
    pub fn statistics(&self) -> crate::Statistics {
        crate::Statistics(self.counters.clone())
    }

    /// Publishes this module's statistics to the `metrics` facade now.
    pub fn publish_metrics(&self) {
        self.counters.publish();
    }
}

/// The instances of one module version on one thread.
struct Slot {
    /// Gone once nothing holds the version any more: the slot is dropped.
    module: Weak<CompiledModule>,
    /// Idle instances, least recently used first. Boxed: a call moves an
    /// instance out and back, and a pointer moves faster than the instance.
    idle: VecDeque<Box<WarmInstance>>,
    idle_ttl: Duration,
    /// The creation throttle (a generic cell rate algorithm): the moment at
    /// which this thread's creations are "paid up" at the allowed rate.
    creations_paid_until: Option<Instant>,
    stats: Recorder,
}

/// The interval between creations at a module's allowed rate, and how far
/// ahead of it a burst may run.
fn creation_spacing(compiled: &CompiledModule) -> (Duration, Duration) {
    let per_second = compiled.settings.max_creations_per_second.max(1);
    let interval = Duration::from_secs(1) / per_second;
    let burst = (per_second / 10).max(1);
    (interval, interval * (burst - 1))
}

impl Slot {
    fn new(module: &LoadedModule) -> Slot {
        Slot {
            module: Arc::downgrade(&module.compiled),
            idle: VecDeque::new(),
            idle_ttl: module.compiled.settings.idle_ttl,
            creations_paid_until: None,
            stats: module.counters.shard(),
        }
    }

    fn drop_idle(&mut self, keep: impl Fn(&WarmInstance) -> bool) {
        let before = self.idle.len();
        self.idle.retain(|i| keep(i));
        let dropped = (before - self.idle.len()) as u64;
        self.stats.evicted(dropped);
        self.stats.idle(-(dropped as i64));
    }

    /// When this thread may next create an instance: `None` for now, or the
    /// moment it may (`max_creations_per_second`).
    ///
    /// Creations are spaced at the allowed rate, with a burst of a tenth of a
    /// second's worth (at least one): a module that keeps failing (each
    /// failure discards its instance) is slowed to the rate one interval at a
    /// time, instead of running a second's worth at once and then waiting up
    /// to a second, which stalled every message behind it.
    ///
    /// A module without caching (`enable_caching: false`) is not throttled:
    /// a fresh instance per call is what it asked for, part of each call's
    /// cost like a slow module's running time (its start and init bounded by
    /// the module's budget and the call's deadline); the throttle would only
    /// cap its throughput (at the default rate, to 1,000 calls a second per
    /// thread with the thread mostly idle).
    fn creation_allowed_at(&mut self, compiled: &CompiledModule, now: Instant) -> Option<Instant> {
        if !compiled.settings.enable_caching {
            return None;
        }
        let (_, tolerance) = creation_spacing(compiled);
        let paid = self.creations_paid_until?.max(now);
        (paid > now + tolerance).then(|| paid - tolerance)
    }

    fn create(
        &mut self,
        compiled: &CompiledModule,
        deadline: Option<(Instant, ErrorKind)>,
    ) -> Result<Box<WarmInstance>, CallError> {
        self.pay_for_creation(compiled);
        let instance = WarmInstance::new(compiled, deadline)
            .map(Box::new)
            .map_err(|e| match e.kind() {
                // Say what ran out of time: not the call, its instance's start.
                ErrorKind::Timeout | ErrorKind::StageTimeout | ErrorKind::PipelineTimeout => {
                    CallError::new(
                        e.kind(),
                        e.module(),
                        format!("starting its instance: {}", e.message()),
                    )
                }
                _ => e,
            });
        match &instance {
            Ok(_) => self.stats.created(),
            Err(e) => self.stats.failed(e.kind()),
        }
        instance
    }

    /// A creation, paid for at the throttle's rate (a module without caching
    /// is not throttled: see `creation_allowed_at`).
    fn pay_for_creation(&mut self, compiled: &CompiledModule) {
        if compiled.settings.enable_caching {
            let now = Instant::now();
            let (interval, _) = creation_spacing(compiled);
            self.creations_paid_until =
                Some(self.creations_paid_until.map_or(now, |paid| paid.max(now)) + interval);
        }
    }
}

impl Drop for Slot {
    /// The thread's pool, or the version, is going away: its instances count
    /// as evicted.
    fn drop(&mut self) {
        self.drop_idle(|_| false);
        self.stats.memory(0, 0);
    }
}

/// Counts a running call of a module while it lives.
struct Running<'a>(&'a AtomicU32);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The warm instances owned by one thread (a wasmer `Store` cannot leave the
/// thread that made it). [`Pool`](crate::Pool) runs one per worker thread,
/// and gives one to each caller's thread that asks
/// ([`Pool::caller_runner`](crate::Pool::caller_runner)); a caller that owns
/// a thread may also make one directly.
#[derive(Default)]
pub struct LocalPool {
    /// By module version: hashing a number is cheaper than hashing a name.
    slots: HashMap<u64, Slot>,
    /// Given to a caller's thread by a pool (dropped after `slots`, so that
    /// the place is given back once the instances are gone).
    attachment: Option<Attachment>,
}

/// A [`LocalPool`] that a [`Pool`](crate::Pool) gave to a caller's thread:
/// one of the pool's callers while it lives, and tidied as a worker's is.
struct Attachment {
    /// The pool's count of caller runners.
    callers: Arc<AtomicUsize>,
    /// How often idle instances are dropped (the pool's cleaner interval).
    interval: coarsetime::Duration,
    last_clean: coarsetime::Instant,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.callers.fetch_sub(1, Ordering::Release);
    }
}

impl LocalPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty pool for a caller's thread, counted in `callers` (already
    /// incremented for it) until it is dropped; its idle instances are
    /// dropped when it is tidied, at most every `interval`, as a worker's
    /// are on its cleaner's beat.
    pub(crate) fn attached(callers: Arc<AtomicUsize>, interval: Duration) -> Self {
        LocalPool {
            slots: HashMap::default(),
            attachment: Some(Attachment {
                callers,
                interval: coarsetime::Duration::from(interval),
                last_clean: coarsetime::Instant::now_without_cache_update(),
            }),
        }
    }

    /// For a caller's pool: drops the idle instances past their time (and
    /// publishes the statistics) once an interval has gone by since the last
    /// time. A worker does this between jobs; a caller's thread when its
    /// holder asks ([`ModuleRunner::tidy`]), between batches.
    fn tidy(&mut self) {
        if let Some(attachment) = &mut self.attachment {
            let now = coarsetime::Instant::now_without_cache_update();
            if now.duration_since(attachment.last_clean) >= attachment.interval {
                attachment.last_clean = now;
                self.evict_idle();
            }
        }
    }

    fn slot<'s>(slots: &'s mut HashMap<u64, Slot>, module: &LoadedModule) -> &'s mut Slot {
        slots
            .entry(module.compiled.version)
            .or_insert_with(|| Slot::new(module))
    }

    /// Keeps `instance`, started for `module` outside any call (its load's
    /// check that it starts), as its first warm instance on this thread,
    /// counted as created — if the module caches instances and is warmed up
    /// as it loads (`warmup_instances`); else drops it. Its init then runs
    /// once for the check and the warm-up together. Whether it was kept.
    pub(crate) fn adopt(&mut self, module: &LoadedModule, instance: WarmInstance) -> bool {
        let settings = &module.compiled.settings;
        if !settings.enable_caching || settings.warmup_instances == 0 {
            return false;
        }
        let slot = Self::slot(&mut self.slots, module);
        slot.pay_for_creation(&module.compiled);
        slot.stats.created();
        slot.idle.push_back(Box::new(instance));
        slot.stats.idle(1);
        true
    }

    /// Creates instances until `count` are idle (warm-up); stops early, without
    /// waiting, if this thread may not create another yet.
    pub fn warm(&mut self, module: &LoadedModule, count: usize) -> Result<(), CallError> {
        let slot = Self::slot(&mut self.slots, module);
        while slot.idle.len() < count {
            if slot
                .creation_allowed_at(&module.compiled, Instant::now())
                .is_some()
            {
                return Ok(());
            }
            let instance = slot.create(&module.compiled, None)?;
            slot.idle.push_back(instance);
            slot.stats.idle(1);
        }
        Ok(())
    }

    /// Runs `module` on the request's message with a warm instance (or a new
    /// one), within the module's budget and the request's deadline, then gives
    /// the instance back, recycles it, or discards it after a failure.
    ///
    /// `Err(Busy)`, with nothing run, when the module already runs
    /// `max_concurrent_instances` calls on all threads together, or when this
    /// thread may not create another instance of it yet
    /// (`max_creations_per_second`): never waits.
    pub fn call(
        &mut self,
        module: &LoadedModule,
        request: CallRequest<'_>,
    ) -> Result<CallReport, Busy> {
        let started = request.get_clock().unwrap_or_else(Instant::now);
        let compiled = &module.compiled;
        let report = |result: Result<_, CallError>, ended: Instant| {
            CallReport::new(result.map_err(Into::into), compiled.version, started, ended)
        };
        let deadline = request.get_deadline();
        if let Some((at, kind)) = deadline {
            if at <= started {
                return Ok(report(
                    Err(CallError::new(
                        kind,
                        &compiled.id,
                        "its time ran out before the call could start",
                    )),
                    Instant::now(),
                ));
            }
        }
        let _running = if module.limit_running {
            let most = compiled.settings.max_concurrent_instances.max(1);
            if module.running.fetch_add(1, Ordering::Relaxed) >= most {
                module.running.fetch_sub(1, Ordering::Relaxed);
                // A fresh reading: the request's may be a little old.
                return Err(Busy {
                    until: Instant::now() + RETRY_WHEN_FULL,
                });
            }
            Some(Running(&module.running))
        } else {
            None
        };
        let slot = Self::slot(&mut self.slots, module);
        let mut instance = match slot.idle.pop_back() {
            Some(instance) => {
                slot.stats.call(true);
                slot.stats.idle(-1);
                instance
            }
            None => {
                // Creating an instance costs far more than a reading of the
                // clock, and the throttle wants an exact one.
                if let Some(until) = slot.creation_allowed_at(compiled, Instant::now()) {
                    return Err(Busy { until });
                }
                slot.stats.call(false);
                match Self::start_for_call(slot, compiled, deadline) {
                    Ok(instance) => instance,
                    Err(e) => return Ok(report(Err(e), Instant::now())),
                }
            }
        };
        let in_use = InUse::new(&slot.stats);
        let result = instance.call(compiled, request.message(), deadline);
        // The call's one reading, usually: its end, and the instance's last use.
        let mut ended = Instant::now();
        drop(in_use);
        let thrown_away = match &result {
            Err(e) if discards_instance(e.kind()) => {
                slot.stats.failed(e.kind());
                slot.stats.discarded();
                Some(instance)
            }
            Err(e) => {
                slot.stats.failed(e.kind());
                Self::give_back(slot, compiled, instance, ended)
            }
            Ok(_) => Self::give_back(slot, compiled, instance, ended),
        };
        if let Some(instance) = thrown_away {
            // Freeing an instance (its memory, its store) is this call's cost,
            // not the next one's: the call ends once it is done.
            drop(instance);
            ended = Instant::now();
        }
        Ok(report(result, ended))
    }

    /// An instance for a call with `deadline`. Without caching it is made
    /// for this call alone: part of the call, within its deadline. A cached
    /// module's instance outlives the call: it starts within the module's
    /// own budget, and if the call's deadline passed meanwhile the call fails
    /// with the deadline's kind and the instance is kept for the next one (an
    /// init slower than a stage's budget would otherwise be cut off and never
    /// kept, every time). A deadline that passed while the instance started
    /// decides the call's kind however the start ended. A failed start is
    /// counted by `Slot::create`; a late one here.
    fn start_for_call(
        slot: &mut Slot,
        compiled: &CompiledModule,
        deadline: Option<(Instant, ErrorKind)>,
    ) -> Result<Box<WarmInstance>, CallError> {
        let creation_deadline = (!compiled.settings.enable_caching)
            .then_some(deadline)
            .flatten();
        let created = slot.create(compiled, creation_deadline);
        let Some((_, kind)) = deadline.filter(|(at, _)| *at <= Instant::now()) else {
            return created;
        };
        let why = match created {
            Ok(instance) => {
                drop(Self::give_back(slot, compiled, instance, Instant::now()));
                slot.stats.failed(kind);
                "its time ran out while its instance started".to_owned()
            }
            Err(e) if e.kind() == kind => return Err(e),
            Err(e) => format!(
                "its time ran out while its instance started, which then failed: {}",
                e.message()
            ),
        };
        Err(CallError::new(kind, &compiled.id, why))
    }

    /// Keeps `instance` warm, stamped with its last use, or gives it back to
    /// be dropped (caching is off, or it has served its calls).
    fn give_back(
        slot: &mut Slot,
        compiled: &CompiledModule,
        mut instance: Box<WarmInstance>,
        now: Instant,
    ) -> Option<Box<WarmInstance>> {
        let settings = &compiled.settings;
        if settings.enable_caching && instance.calls < settings.recycle_after_calls {
            instance.last_used = now;
            slot.idle.push_back(instance);
            slot.stats.idle(1);
            None
        } else {
            slot.stats.evicted(1);
            Some(instance)
        }
    }

    /// Drops instances idle for longer than their module's time-to-live, and
    /// every instance of versions nothing holds any more; publishes each
    /// module's statistics to the `metrics` facade.
    pub fn evict_idle(&mut self) {
        let now = Instant::now();
        self.slots.retain(|_, slot| {
            if slot.module.strong_count() == 0 {
                slot.drop_idle(|_| false);
                slot.stats.memory(0, 0);
                slot.stats.counters().publish();
                return false;
            }
            let ttl = slot.idle_ttl;
            slot.drop_idle(|i| now.saturating_duration_since(i.last_used) < ttl);
            // Between calls every instance of this thread is idle.
            let sizes = slot.idle.iter().map(|i| i.memory_bytes());
            let (all, largest) = sizes.fold((0, 0), |(all, largest), size| {
                (all + size, largest.max(size))
            });
            slot.stats.memory(all, largest);
            slot.stats.counters().publish();
            true
        });
    }

    /// How many idle instances this pool holds for `module`.
    pub fn idle_len(&self, module: &LoadedModule) -> usize {
        self.slots
            .get(&module.compiled.version)
            .map_or(0, |s| s.idle.len())
    }
}

impl ModuleRunner for LocalPool {
    type Module = LoadedModule;

    fn call(
        &mut self,
        module: &LoadedModule,
        request: CallRequest<'_>,
    ) -> Result<CallReport, Busy> {
        LocalPool::call(self, module, request)
    }

    fn tidy(&mut self) {
        LocalPool::tidy(self);
    }

    /// One warm instance of a module that caches instances and asks for
    /// warm-up ones (`warmup_instances`), as each worker the pool warms has.
    fn prepare(&mut self, module: &LoadedModule) {
        let settings = &module.compiled.settings;
        if settings.enable_caching && settings.warmup_instances > 0 {
            if let Err(e) = self.warm(module, 1) {
                log::warn!("module {:?}: warm-up failed: {e}", module.id());
            }
        }
    }
}

/// An instance counted in use while this lives: uncounted however the call
/// ends, a panic unwinding through it included (caught by the pool's worker
/// or by the embedding program, as the orchestrator does).
struct InUse<'s>(&'s Recorder);

impl<'s> InUse<'s> {
    fn new(stats: &'s Recorder) -> Self {
        stats.in_use(1);
        InUse(stats)
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.0.in_use(-1);
    }
}
