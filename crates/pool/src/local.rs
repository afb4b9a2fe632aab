//! The instances of one thread: warm instances per module, reused, recycled,
//! evicted when idle too long, discarded after a failure.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;
use rustmq_etl_core::{Message, Transformed};

use crate::error::CallError;
use crate::instance::WarmInstance;
use crate::module::CompiledModule;
use crate::stats::{Counters, Recorder};

/// A compiled module version, ready to be run by a [`LocalPool`] or a
/// [`Pool`](crate::Pool).
#[derive(Clone, Debug)]
pub struct LoadedModule {
    pub(crate) compiled: Arc<CompiledModule>,
    pub(crate) counters: Arc<Counters>,
}

impl LoadedModule {
    /// Checks `wasm` against the sandbox's rules, compiles it (or loads it
    /// from the settings' cache) and checks its ABI.
    pub fn compile(
        id: &str,
        wasm: &[u8],
        config: crate::ModuleConfig,
        settings: &crate::CompileSettings,
    ) -> Result<LoadedModule, crate::LoadError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static VERSIONS: AtomicU64 = AtomicU64::new(1);
        let version = VERSIONS.fetch_add(1, Ordering::Relaxed);
        let compiled = crate::module::compile(id, version, wasm, config, settings)?;
        Ok(LoadedModule {
            counters: Arc::new(Counters::new(id)),
            compiled: Arc::new(compiled),
        })
    }

    /// The module's id.
    pub fn id(&self) -> &str {
        &self.compiled.id
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
}

/// The instances of one module version on one thread.
struct Slot {
    id: String,
    /// Idle instances, least recently used first. Boxed: a call moves an
    /// instance out and back, and a pointer moves faster than the instance.
    idle: VecDeque<Box<WarmInstance>>,
    idle_ttl: Duration,
    creations: VecDeque<Instant>,
    stats: Recorder,
    /// A newer version of the module is loaded: this slot only finishes the
    /// calls dispatched before the swap and keeps no instance.
    retired: bool,
}

impl Slot {
    fn new(module: &LoadedModule) -> Slot {
        let compiled = &module.compiled;
        Slot {
            id: compiled.id.clone(),
            idle: VecDeque::new(),
            idle_ttl: compiled.config.idle_ttl,
            creations: VecDeque::new(),
            stats: module.counters.shard(),
            retired: false,
        }
    }

    fn drop_idle(&mut self, keep: impl Fn(&WarmInstance) -> bool) {
        let before = self.idle.len();
        self.idle.retain(|i| keep(i));
        let dropped = (before - self.idle.len()) as u64;
        self.stats.evicted(dropped);
        self.stats.idle(-(dropped as i64));
    }
}

impl Drop for Slot {
    /// The thread's pool is going away: its instances count as evicted.
    fn drop(&mut self) {
        self.drop_idle(|_| false);
    }
}

/// The warm instances owned by one thread (a wasmer `Store` cannot leave the
/// thread that made it). [`Pool`](crate::Pool) runs one per worker thread; a
/// caller that owns a thread may use one directly.
#[derive(Default)]
pub struct LocalPool {
    /// By module version: a hot swap makes a new slot, and hashing a number is
    /// cheaper than hashing the module's name on every call.
    slots: HashMap<u64, Slot>,
}

impl LocalPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The slot of `module` (made on first use; the first use of a new version
    /// of a module drops its predecessor's instances).
    fn slot<'s>(slots: &'s mut HashMap<u64, Slot>, module: &LoadedModule) -> &'s mut Slot {
        let compiled = &module.compiled;
        if !slots.contains_key(&compiled.version) {
            let mut slot = Slot::new(module);
            // Versions only grow: an older slot of this module was swapped out;
            // a newer one means this call was dispatched before the swap.
            slots.retain(|&version, other| {
                if other.id != compiled.id {
                    return true;
                }
                if version > compiled.version {
                    slot.retired = true;
                    return true;
                }
                other.drop_idle(|_| false);
                false
            });
            slots.insert(compiled.version, slot);
        }
        slots
            .get_mut(&compiled.version)
            .expect("the slot exists or was inserted above")
    }

    /// When this thread may next create an instance of the slot's module:
    /// `None` for now, or the moment its oldest creation of the last second
    /// leaves the window (`max_creations_per_second`).
    fn creation_allowed_at_slot(slot: &mut Slot, compiled: &CompiledModule) -> Option<Instant> {
        let per_second = compiled.config.max_creations_per_second.max(1) as usize;
        let now = Instant::now();
        while slot
            .creations
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            slot.creations.pop_front();
        }
        if slot.creations.len() < per_second {
            return None;
        }
        slot.creations.front().map(|t| *t + Duration::from_secs(1))
    }

    /// Creates an instance, or answers [`ErrorKind::Throttled`](crate::ErrorKind::Throttled)
    /// if this thread created too many in the last second (it never waits).
    fn create(slot: &mut Slot, compiled: &CompiledModule) -> Result<Box<WarmInstance>, CallError> {
        if let Some(at) = Self::creation_allowed_at_slot(slot, compiled) {
            return Err(CallError::new(
                crate::ErrorKind::Throttled,
                &compiled.id,
                format!(
                    "created {} instances in the last second (max_creations_per_second); the next may be created in {:?}",
                    slot.creations.len(),
                    at.saturating_duration_since(Instant::now())
                ),
            ));
        }
        slot.creations.push_back(Instant::now());
        let instance = WarmInstance::new(compiled).map(Box::new);
        match &instance {
            Ok(_) => slot.stats.created(),
            Err(e) => slot.stats.failed(e.kind()),
        }
        instance
    }

    /// Creates `count` instances ahead of calls (warm-up).
    pub fn warm(&mut self, module: &LoadedModule, count: usize) -> Result<(), CallError> {
        let slot = Self::slot(&mut self.slots, module);
        while slot.idle.len() < count {
            let instance = Self::create(slot, &module.compiled)?;
            slot.idle.push_back(instance);
            slot.stats.idle(1);
        }
        Ok(())
    }

    /// Runs `module` on `message` with a warm instance (or a new one), then gives
    /// the instance back, recycles it, or discards it after a failure.
    pub fn call(
        &mut self,
        module: &LoadedModule,
        message: &Message,
    ) -> Result<Transformed, CallError> {
        let compiled = &module.compiled;
        let slot = Self::slot(&mut self.slots, module);
        let mut instance = match slot.idle.pop_back() {
            Some(instance) => {
                slot.stats.call(true);
                slot.stats.idle(-1);
                instance
            }
            None => {
                // A throttled call is not counted: it has not happened yet.
                if Self::creation_allowed_at_slot(slot, compiled).is_none() {
                    slot.stats.call(false);
                }
                Self::create(slot, compiled)?
            }
        };
        slot.stats.in_use(1);
        let result = instance.call(compiled, message);
        slot.stats.in_use(-1);
        match &result {
            Err(e) => {
                slot.stats.failed(e.kind());
                if e.kind().discards_instance() {
                    slot.stats.discarded();
                } else {
                    Self::give_back(slot, compiled, instance);
                }
            }
            Ok(_) => Self::give_back(slot, compiled, instance),
        }
        result
    }

    fn give_back(slot: &mut Slot, compiled: &CompiledModule, mut instance: Box<WarmInstance>) {
        let config = &compiled.config;
        if config.enable_caching && !slot.retired && instance.calls < config.recycle_after_calls {
            // A coarse clock (a few milliseconds fine) is plenty for an idle
            // time-to-live and costs a fraction of `Instant::now`.
            instance.last_used = coarsetime::Instant::now_without_cache_update();
            slot.idle.push_back(instance);
            slot.stats.idle(1);
        } else {
            slot.stats.evicted(1);
        }
    }

    /// Drops instances idle for longer than their module's time-to-live, and
    /// publishes each module's instance levels to the `metrics` gauges.
    pub fn evict_idle(&mut self) {
        let now = coarsetime::Instant::now_without_cache_update();
        for slot in self.slots.values_mut() {
            let ttl = coarsetime::Duration::from(slot.idle_ttl);
            slot.drop_idle(|i| now.duration_since(i.last_used) < ttl);
            slot.stats.counters().publish_levels();
        }
        // A slot that only finished calls for a swapped-out version is done.
        self.slots.retain(|_, s| !(s.retired && s.idle.is_empty()));
    }

    /// When this pool may next create an instance of `module`, if it may not
    /// now (see [`ErrorKind::Throttled`](crate::ErrorKind::Throttled)).
    pub fn creation_allowed_at(&mut self, module: &LoadedModule) -> Option<Instant> {
        let slot = Self::slot(&mut self.slots, module);
        Self::creation_allowed_at_slot(slot, &module.compiled)
    }

    /// Drops every instance of a module.
    pub fn forget(&mut self, id: &str) {
        self.slots.retain(|_, slot| {
            if slot.id == id {
                slot.drop_idle(|_| false);
            }
            slot.id != id
        });
    }

    /// How many idle instances this pool holds for `id`.
    pub fn idle_len(&self, id: &str) -> usize {
        self.slots
            .values()
            .filter(|s| s.id == id)
            .map(|s| s.idle.len())
            .sum()
    }
}
