//! The pool: worker threads that own warm instances, fed through channels, and a
//! `Send + Sync` front that async and blocking callers share.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustmq_etl_core::{Message, ModuleRunner, Transformed};
use tokio::sync::{oneshot, Semaphore};

use crate::error::{CallError, ErrorKind, LoadError};
use crate::local::{LoadedModule, LocalPool};
use crate::module::{ArtifactCache, ModuleConfig};
use crate::stats::ModuleStats;

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Worker threads that run guest code (default: one per core). Guest code
    /// never runs on the caller's (async runtime's) threads.
    pub workers: usize,
    /// Where compiled artifacts are cached (default: none, compile every time).
    pub artifact_cache: Option<PathBuf>,
    /// Metering points per millisecond of budget (default: measured at start,
    /// see `docs/abi.md`, "Time budgets").
    pub fuel_per_ms: Option<u64>,
    /// How often each worker drops instances idle past their time-to-live.
    pub cleaner_interval: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            artifact_cache: None,
            fuel_per_ms: None,
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
    fuel_per_ms: u64,
    cache: Option<ArtifactCache>,
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
    /// Starts the worker threads (and measures the metering rate unless given).
    pub fn new(config: PoolConfig) -> Result<Pool, String> {
        let fuel_per_ms = match config.fuel_per_ms {
            Some(f) => f,
            None => crate::calibrate::fuel_per_ms()?,
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
            fuel_per_ms,
            cache,
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

    /// The metering points per millisecond this pool uses.
    pub fn fuel_per_ms(&self) -> u64 {
        self.shared.fuel_per_ms
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
        let module = LoadedModule::compile(
            id,
            wasm,
            config,
            self.shared.fuel_per_ms,
            self.shared.cache.as_ref(),
        )?;
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

fn worker(index: usize, jobs: mpsc::Receiver<Job>, shared: Arc<Shared>, interval: Duration) {
    let mut local = LocalPool::new();
    // Checked after every job: the coarse clock costs a fraction of `Instant::now`.
    let interval_coarse = coarsetime::Duration::from(interval);
    let mut last_clean = coarsetime::Instant::now_without_cache_update();
    loop {
        match jobs.recv_timeout(interval) {
            Ok(job) => {
                shared.workers[index].queued.fetch_sub(1, Ordering::Relaxed);
                match job {
                    Job::Call {
                        module,
                        message,
                        reply,
                    } => {
                        let _ = reply.send(local.call(&module, &message));
                    }
                    Job::Warm { module, count } => {
                        if let Err(e) = local.warm(&module, count) {
                            log::warn!("module {:?}: warm-up failed: {e}", module.id());
                        }
                    }
                    Job::Forget { id } => local.forget(&id),
                    Job::Check { module, reply } => {
                        let started = crate::instance::WarmInstance::new(&module.compiled);
                        let _ = reply.send(started.map(drop));
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = coarsetime::Instant::now_without_cache_update();
        if now.duration_since(last_clean) >= interval_coarse {
            local.evict_idle();
            last_clean = now;
        }
    }
}
