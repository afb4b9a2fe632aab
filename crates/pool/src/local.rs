//! The instances of one thread: warm instances per module, reused, recycled,
//! evicted when idle too long, discarded after a failure.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;
use rustmq_etl_core::{Message, Transformed};

use crate::error::CallError;
use crate::instance::{Scratch, WarmInstance};
use crate::module::CompiledModule;
use crate::stats::Counters;

/// A compiled module version, ready to be run by a [`LocalPool`] or a
/// [`Pool`](crate::Pool).
#[derive(Clone, Debug)]
pub struct LoadedModule {
    pub(crate) compiled: Arc<CompiledModule>,
    pub(crate) counters: Arc<Counters>,
}

impl LoadedModule {
    /// Compiles `wasm` (or loads it from `cache`) and checks its ABI and imports.
    /// `fuel_per_ms` turns the module's time budget into metering points (see
    /// [`fuel_per_ms`](crate::fuel_per_ms)).
    pub fn compile(
        id: &str,
        wasm: &[u8],
        config: crate::ModuleConfig,
        fuel_per_ms: u64,
        cache: Option<&crate::ArtifactCache>,
    ) -> Result<LoadedModule, crate::LoadError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static VERSIONS: AtomicU64 = AtomicU64::new(1);
        let version = VERSIONS.fetch_add(1, Ordering::Relaxed);
        let compiled = crate::module::compile(id, version, wasm, config, fuel_per_ms, cache)?;
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

struct Slot {
    version: u64,
    /// Idle instances, least recently used first.
    idle: VecDeque<WarmInstance>,
    idle_ttl: Duration,
    creations: VecDeque<Instant>,
    counters: Arc<Counters>,
}

impl Slot {
    fn drop_idle(&mut self, keep: impl Fn(&WarmInstance) -> bool) {
        let before = self.idle.len();
        self.idle.retain(|i| keep(i));
        let dropped = (before - self.idle.len()) as u64;
        self.counters.evicted(dropped);
        self.counters.idle(-(dropped as i64));
    }
}

/// The warm instances owned by one thread (a wasmer `Store` cannot leave the
/// thread that made it). [`Pool`](crate::Pool) runs one per worker thread; a
/// caller that owns a thread may use one directly.
#[derive(Default)]
pub struct LocalPool {
    slots: HashMap<String, Slot>,
    scratch: Scratch,
}

impl LocalPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The slot of `module` (made on first use, emptied when a new version of
    /// the module arrives). Takes the map alone so that callers can borrow the
    /// scratch space beside it.
    fn slot<'s>(slots: &'s mut HashMap<String, Slot>, module: &LoadedModule) -> &'s mut Slot {
        let compiled = &module.compiled;
        // Look up before inserting: `entry` would need an owned key every call.
        if !slots.contains_key(&compiled.id) {
            slots.insert(
                compiled.id.clone(),
                Slot {
                    version: compiled.version,
                    idle: VecDeque::new(),
                    idle_ttl: compiled.config.idle_ttl,
                    creations: VecDeque::new(),
                    counters: module.counters.clone(),
                },
            );
        }
        let slot = slots.get_mut(&compiled.id).expect("inserted above");
        if slot.version != compiled.version {
            // A new version was swapped in: its predecessor's instances go.
            slot.drop_idle(|_| false);
            slot.version = compiled.version;
            slot.idle_ttl = compiled.config.idle_ttl;
            slot.counters = module.counters.clone();
        }
        slot
    }

    /// Creates an instance, waiting if this thread created too many in the last second.
    fn create(slot: &mut Slot, compiled: &CompiledModule) -> Result<WarmInstance, CallError> {
        let per_second = compiled.config.max_creations_per_second.max(1) as usize;
        let now = Instant::now();
        while slot
            .creations
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            slot.creations.pop_front();
        }
        if slot.creations.len() >= per_second {
            if let Some(oldest) = slot.creations.front() {
                std::thread::sleep(
                    Duration::from_secs(1).saturating_sub(now.duration_since(*oldest)),
                );
            }
            slot.creations.pop_front();
        }
        slot.creations.push_back(Instant::now());
        let instance = WarmInstance::new(compiled);
        match &instance {
            Ok(_) => slot.counters.created(),
            Err(e) => slot.counters.failed(e.kind()),
        }
        instance
    }

    /// Creates `count` instances ahead of calls (warm-up).
    pub fn warm(&mut self, module: &LoadedModule, count: usize) -> Result<(), CallError> {
        let slot = Self::slot(&mut self.slots, module);
        while slot.idle.len() < count {
            let instance = Self::create(slot, &module.compiled)?;
            slot.idle.push_back(instance);
            slot.counters.idle(1);
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
        let reused = slot.idle.pop_back();
        slot.counters.call(reused.is_some());
        let mut instance = match reused {
            Some(instance) => {
                slot.counters.idle(-1);
                instance
            }
            None => Self::create(slot, compiled)?,
        };
        slot.counters.in_use(1);
        let result = instance.call(compiled, message, &mut self.scratch);
        slot.counters.in_use(-1);
        match &result {
            Err(e) => {
                slot.counters.failed(e.kind());
                if e.kind().discards_instance() {
                    slot.counters.discarded();
                } else {
                    Self::give_back(slot, compiled, instance);
                }
            }
            Ok(_) => Self::give_back(slot, compiled, instance),
        }
        result
    }

    fn give_back(slot: &mut Slot, compiled: &CompiledModule, instance: WarmInstance) {
        let config = &compiled.config;
        if config.enable_caching
            && instance.calls < config.recycle_after_calls
            && instance.version == slot.version
        {
            slot.idle.push_back(instance);
            slot.counters.idle(1);
        } else {
            slot.counters.evicted(1);
        }
    }

    /// Drops instances idle for longer than their module's time-to-live.
    pub fn evict_idle(&mut self) {
        let now = Instant::now();
        for slot in self.slots.values_mut() {
            let ttl = slot.idle_ttl;
            slot.drop_idle(|i| now.duration_since(i.last_used) < ttl);
        }
    }

    /// Drops every instance of a module.
    pub fn forget(&mut self, id: &str) {
        if let Some(mut slot) = self.slots.remove(id) {
            slot.drop_idle(|_| false);
        }
    }

    /// How many idle instances this pool holds for `id`.
    pub fn idle_len(&self, id: &str) -> usize {
        self.slots.get(id).map_or(0, |s| s.idle.len())
    }
}
