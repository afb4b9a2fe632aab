//! The pool: worker threads that own warm instances, fed through channels, and a
//! `Send + Sync` front that async and blocking callers share.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustmq_etl_core::{Message, ModuleRunner, Transformed};
use tokio::sync::{oneshot, Semaphore};

use crate::admission::CompileLimits;
use crate::error::{CallError, ErrorKind, LoadError};
use crate::local::{LoadedModule, LocalPool};
use crate::module::{ArtifactCache, CompileSettings, ModuleConfig};
use crate::stats::ModuleStats;

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Worker threads that run guest code (default: one per core). Guest code
    /// never runs on the caller's (async runtime's) threads.
    pub workers: usize,
    /// Where compiled artifacts are cached (default: none, compile every time).
    /// The directory must be private to this user (see [`ArtifactCache`]).
    pub artifact_cache: Option<PathBuf>,
    /// Bytes of bulk memory work a call may do per millisecond of its budget
    /// (default: measured at start, see `docs/abi.md`, "Time budgets").
    pub bulk_bytes_per_ms: Option<u64>,
    /// Limits on the modules this pool compiles.
    pub compile_limits: CompileLimits,
    /// How often each worker drops instances idle past their time-to-live.
    pub cleaner_interval: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            artifact_cache: None,
            bulk_bytes_per_ms: None,
            compile_limits: CompileLimits::default(),
            cleaner_interval: Duration::from_secs(1),
        }
    }
}

enum Job {
    Call {
        module: LoadedModule,
        message: Message,
        reply: oneshot::Sender<Result<Transformed, CallError>>,
    },
    Warm {
        module: LoadedModule,
        count: usize,
    },
    Forget {
        id: String,
    },
    /// Start an instance of a module not yet swapped in, to prove that it
    /// initialises, and drop it.
    Check {
        module: LoadedModule,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
}

struct Entry {
    module: LoadedModule,
    permits: Arc<Semaphore>,
    /// The workers this module may run on: `width` of them from `home` on, so
    /// that at most `max_concurrent_instances` instances of it exist.
    home: usize,
    width: usize,
}

struct Worker {
    jobs: Mutex<mpsc::Sender<Job>>,
    queued: AtomicUsize,
}

struct Shared {
    modules: ArcSwap<HashMap<String, Arc<Entry>>>,
    load_lock: Mutex<()>,
    workers: Vec<Worker>,
    settings: CompileSettings,
}

/// Runs modules on worker threads that own warm instances.
///
/// `Send + Sync`: share it behind an `Arc`. Dropping it stops the workers (and
/// their idle-instance cleaners) after the calls already queued.
pub struct Pool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.shared.workers.len())
            .field("modules", &self.shared.modules.load().len())
            .finish()
    }
}

/// What loading a module did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// The module's id.
    pub id: String,
    /// Whether an earlier version was replaced.
    pub replaced: bool,
    /// Whether the compiled code came from the artifact cache.
    pub from_cache: bool,
    /// Which ABI the module speaks.
    pub abi: crate::Abi,
}

impl Pool {
    /// Starts the worker threads (and measures the bulk rate unless given).
    pub fn new(config: PoolConfig) -> Result<Pool, String> {
        let bulk_bytes_per_ms = match config.bulk_bytes_per_ms {
            Some(rate) => rate,
            None => crate::calibrate::bulk_bytes_per_ms()?,
        };
        let cache = match &config.artifact_cache {
            Some(dir) => Some(
                ArtifactCache::new(dir)
                    .map_err(|e| format!("artifact cache {}: {e}", dir.display()))?,
            ),
            None => None,
        };
        let mut workers = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..config.workers.max(1) {
            let (tx, rx) = mpsc::channel();
            workers.push(Worker {
                jobs: Mutex::new(tx),
                queued: AtomicUsize::new(0),
            });
            receivers.push(rx);
        }
        let shared = Arc::new(Shared {
            modules: ArcSwap::from_pointee(HashMap::new()),
            load_lock: Mutex::new(()),
            workers,
            settings: CompileSettings {
                limits: config.compile_limits.clone(),
                bulk_bytes_per_ms,
                cache,
            },
        });
        let threads = receivers
            .into_iter()
            .enumerate()
            .map(|(i, rx)| {
                let shared = shared.clone();
                let interval = config.cleaner_interval;
                std::thread::Builder::new()
                    .name(format!("rustmq-etl-wasm-{i}"))
                    .spawn(move || worker(i, rx, shared, interval))
                    .map_err(|e| format!("cannot start a worker thread: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Pool { shared, threads })
    }

    /// The bytes of bulk memory work per millisecond of budget this pool allows.
    pub fn bulk_bytes_per_ms(&self) -> u64 {
        self.shared.settings.bulk_bytes_per_ms
    }

    /// Loads a module file; see [`Pool::load`].
    pub fn load_file(
        &self,
        id: &str,
        path: &std::path::Path,
        config: ModuleConfig,
    ) -> Result<LoadReport, LoadError> {
        let wasm = std::fs::read(path).map_err(|e| LoadError::Read {
            module: id.to_owned(),
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        self.load(id, &wasm, config)
    }

    /// Compiles `wasm` (or takes it from the artifact cache), starts a first
    /// instance on a worker thread to prove that it initialises, and swaps it in
    /// under `id`. Calls already dispatched finish on the version they started
    /// with. If anything fails, the version already loaded (if any) keeps serving.
    ///
    /// Blocks the calling thread while it compiles and while the worker starts
    /// the instance (no guest code runs on the calling thread); from async code,
    /// call it where blocking is allowed (for example tokio's `spawn_blocking`).
    pub fn load(
        &self,
        id: &str,
        wasm: &[u8],
        config: ModuleConfig,
    ) -> Result<LoadReport, LoadError> {
        let module = LoadedModule::compile(id, wasm, config, &self.shared.settings)?;
        // Instantiate and init once, on a worker (guest code runs only there),
        // so that a module that cannot start is refused before it replaces
        // anything.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        let home = hasher.finish() as usize % self.shared.workers.len();
        let (reply, answer) = oneshot::channel();
        let checked = self.send(
            home,
            Job::Check {
                module: module.clone(),
                reply,
            },
        );
        let started = if checked {
            pollster::block_on(answer).map_err(|_| "the worker stopped".to_owned())
        } else {
            Err("the pool is shutting down".to_owned())
        };
        match started {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(LoadError::Init {
                    module: id.to_owned(),
                    message: e.message().to_owned(),
                })
            }
            Err(message) => {
                return Err(LoadError::Init {
                    module: id.to_owned(),
                    message,
                })
            }
        }
        let config = &module.compiled.config;
        let workers = self.shared.workers.len();
        let width = (config.max_concurrent_instances.max(1) as usize).min(workers);
        let entry = Arc::new(Entry {
            permits: Arc::new(Semaphore::new(
                config.max_concurrent_instances.max(1) as usize
            )),
            home,
            width,
            module: module.clone(),
        });
        let warmup = (config.warmup_instances as usize).min(width);
        let replaced =
            self.update_modules(|modules| modules.insert(id.to_owned(), entry.clone()).is_some());
        for w in 0..warmup {
            self.send(
                (entry.home + w) % workers,
                Job::Warm {
                    module: module.clone(),
                    count: 1,
                },
            );
        }
        Ok(LoadReport {
            id: id.to_owned(),
            replaced,
            from_cache: module.compiled.from_cache,
            abi: module.compiled.abi,
        })
    }

    /// Changes the module map: readers see the old map or the new one, never a
    /// half-made one, and never wait (`arc-swap`); writers take turns.
    fn update_modules<R>(&self, change: impl FnOnce(&mut HashMap<String, Arc<Entry>>) -> R) -> R {
        let _guard = self
            .shared
            .load_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut modules = HashMap::clone(&self.shared.modules.load());
        let result = change(&mut modules);
        self.shared.modules.store(Arc::new(modules));
        result
    }

    /// Stops serving a module; its instances are dropped. Returns whether it was loaded.
    pub fn unload(&self, id: &str) -> bool {
        let removed = self.update_modules(|modules| modules.remove(id).is_some());
        if removed {
            for w in 0..self.shared.workers.len() {
                self.send(w, Job::Forget { id: id.to_owned() });
            }
        }
        removed
    }

    fn send(&self, worker: usize, job: Job) -> bool {
        let w = &self.shared.workers[worker];
        w.queued.fetch_add(1, Ordering::Relaxed);
        let sent = w
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .is_ok();
        if !sent {
            w.queued.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }

    /// Runs module `id` on `message`. Waits (without blocking a thread) while the
    /// module already runs `max_concurrent_instances` calls.
    pub async fn call(&self, id: &str, message: &Message) -> Result<Transformed, CallError> {
        let entry = self.shared.modules.load().get(id).cloned().ok_or_else(|| {
            CallError::new(ErrorKind::NotFound, id, "no module with this id is loaded")
        })?;
        let _permit =
            entry.permits.acquire().await.map_err(|_| {
                CallError::new(ErrorKind::ShutDown, id, "the pool is shutting down")
            })?;
        let workers = self.shared.workers.len();
        let worker = (0..entry.width)
            .map(|i| (entry.home + i) % workers)
            .min_by_key(|&w| self.shared.workers[w].queued.load(Ordering::Relaxed))
            .unwrap_or(entry.home);
        let (reply, answer) = oneshot::channel();
        let job = Job::Call {
            module: entry.module.clone(),
            message: message.clone(),
            reply,
        };
        if !self.send(worker, job) {
            return Err(CallError::new(
                ErrorKind::ShutDown,
                id,
                "the pool is shutting down",
            ));
        }
        answer.await.map_err(|_| {
            CallError::new(
                ErrorKind::ShutDown,
                id,
                "the worker stopped before answering",
            )
        })?
    }

    /// [`Pool::call`] for callers outside an async runtime: blocks this thread.
    pub fn call_blocking(&self, id: &str, message: &Message) -> Result<Transformed, CallError> {
        pollster::block_on(self.call(id, message))
    }

    /// Statistics of a loaded module.
    pub fn stats(&self, id: &str) -> Option<ModuleStats> {
        self.shared
            .modules
            .load()
            .get(id)
            .map(|e| e.module.counters.snapshot())
    }

    /// The ids of the loaded modules.
    pub fn modules(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.shared.modules.load().keys().cloned().collect();
        ids.sort();
        ids
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the channels ends each worker's loop once its queue is empty.
        for w in &self.shared.workers {
            let (closed, _) = mpsc::channel();
            *w.jobs.lock().unwrap_or_else(|p| p.into_inner()) = closed;
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl ModuleRunner for Pool {
    type Error = CallError;

    fn run(
        &self,
        module: &str,
        message: &Message,
    ) -> impl std::future::Future<Output = Result<Transformed, CallError>> + Send {
        self.call(module, message)
    }
}

/// A call that may not run yet (its module's instance creations are
/// throttled), and when it may.
struct Deferred {
    at: Instant,
    order: u64,
    job: Job,
}

impl PartialEq for Deferred {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Deferred {}
impl PartialOrd for Deferred {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Deferred {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// One worker thread: its warm instances, and the calls it put off.
struct WorkerState {
    local: LocalPool,
    deferred: BinaryHeap<Reverse<Deferred>>,
    deferrals: u64,
}

impl WorkerState {
    /// Runs `f` on the worker's pool; a panic in it is caught, and the pool,
    /// whose state it may have broken half-way, is replaced by an empty one.
    fn contain<R>(&mut self, what: &str, f: impl FnOnce(&mut LocalPool) -> R) -> Result<R, String> {
        catch_unwind(AssertUnwindSafe(|| f(&mut self.local))).map_err(|panic| {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            log::error!("rustmq-etl worker: the host panicked while {what}: {text}; the worker's instances are dropped and it goes on");
            self.local = LocalPool::new();
            format!("the host failed while running this module (a rustmq-etl bug; please report it): {text}")
        })
    }

    fn run(&mut self, job: Job) {
        match job {
            Job::Call {
                module,
                message,
                reply,
            } => {
                let result = self
                    .contain("running a call", |local| local.call(&module, &message))
                    .unwrap_or_else(|text| Err(CallError::new(ErrorKind::Trap, module.id(), text)));
                match result {
                    Err(e) if e.kind() == ErrorKind::Throttled => {
                        // Run it when the module may create an instance again,
                        // serving other modules' calls meanwhile.
                        let at = self
                            .local
                            .creation_allowed_at(&module)
                            .unwrap_or_else(Instant::now);
                        self.deferrals += 1;
                        self.deferred.push(Reverse(Deferred {
                            at,
                            order: self.deferrals,
                            job: Job::Call {
                                module,
                                message,
                                reply,
                            },
                        }));
                    }
                    result => {
                        let _ = reply.send(result);
                    }
                }
            }
            Job::Warm { module, count } => {
                match self.contain("warming up", |local| local.warm(&module, count)) {
                    Ok(Err(e)) if e.kind() == ErrorKind::Throttled => {}
                    Ok(Err(e)) => log::warn!("module {:?}: warm-up failed: {e}", module.id()),
                    Ok(Ok(())) | Err(_) => {}
                }
            }
            Job::Forget { id } => {
                let _ = self.contain("dropping instances", |local| local.forget(&id));
            }
            Job::Check { module, reply } => {
                let started = self
                    .contain("starting an instance", |_| {
                        crate::instance::WarmInstance::new(&module.compiled).map(drop)
                    })
                    .unwrap_or_else(|text| Err(CallError::new(ErrorKind::Init, module.id(), text)));
                let _ = reply.send(started);
            }
        }
    }

    /// Runs the deferred calls that are due; returns when the next one is.
    fn run_due(&mut self) -> Option<Instant> {
        loop {
            let at = self.deferred.peek()?.0.at;
            if at > Instant::now() {
                return Some(at);
            }
            let Reverse(due) = self.deferred.pop()?;
            self.run(due.job);
        }
    }
}

fn worker(index: usize, jobs: mpsc::Receiver<Job>, shared: Arc<Shared>, interval: Duration) {
    let mut state = WorkerState {
        local: LocalPool::new(),
        deferred: BinaryHeap::new(),
        deferrals: 0,
    };
    // Checked after every job: the coarse clock costs a fraction of `Instant::now`.
    let interval_coarse = coarsetime::Duration::from(interval);
    let mut last_clean = coarsetime::Instant::now_without_cache_update();
    let mut open = true;
    while open || !state.deferred.is_empty() {
        let wait = match state.run_due() {
            Some(at) => at.saturating_duration_since(Instant::now()).min(interval),
            None => interval,
        };
        if open {
            match jobs.recv_timeout(wait) {
                Ok(job) => {
                    shared.workers[index].queued.fetch_sub(1, Ordering::Relaxed);
                    state.run(job);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
            }
        } else {
            // Shutting down: only the deferred calls are left to answer.
            std::thread::sleep(wait);
        }
        let now = coarsetime::Instant::now_without_cache_update();
        if now.duration_since(last_clean) >= interval_coarse {
            let _ = state.contain("dropping idle instances", LocalPool::evict_idle);
            last_clean = now;
        }
    }
}
