//! The pool: worker threads that own warm instances, fed through channels, and a
//! `Send + Sync` front that async and blocking callers share. It is the
//! wasmer implementation of `rustmq_etl_core::Engine`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustmq_etl_core::{
    CallRequest, Engine, ErrorKind, Message, ModuleSpec, NoRunner, Outcome, Step, Task, Waiting,
};
use tokio::sync::oneshot;

use crate::admission::CompileLimits;
use crate::error::{CallError, LoadError, StartError};
use crate::local::{LoadedModule, LocalPool};
use crate::module::{ArtifactCache, CompileSettings};
use crate::stats::Counters;

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Worker threads that run guest code (default: one per core). Guest code
    /// runs on them, and on the threads of callers that asked for a runner
    /// of their own ([`PoolConfig::caller_threads`]); never on an async
    /// runtime's threads unless a caller runs it there.
    pub workers: usize,
    /// How many callers' threads may hold a runner of their own at once
    /// ([`Pool::caller_runner`]: the caller's thread then runs modules itself,
    /// with warm instances of its own, and no message is handed over).
    /// Default 0: none. Every module is run within its
    /// `max_concurrent_instances` by the workers and these threads together,
    /// so when workers and caller threads together outnumber a module's
    /// limit, its calls are counted across threads (two shared atomic
    /// operations a call) — a cost the pool skips while they do not.
    pub caller_threads: usize,
    /// Where compiled artifacts are cached (default: none, compile every time).
    /// The directory must be private to this user (see [`ArtifactCache`]).
    pub artifact_cache: Option<PathBuf>,
    /// The most bytes of artifacts the cache keeps: past it, storing one
    /// removes those used the longest ago (default
    /// [`ArtifactCache::DEFAULT_MAX_BYTES`], 1 GiB).
    pub artifact_cache_max_bytes: u64,
    /// Bytes of bulk memory work a call may do per millisecond of its budget
    /// (default: measured at start, see `docs/abi.md`, "Time budgets").
    pub bulk_bytes_per_ms: Option<u64>,
    /// Limits on the modules this pool compiles.
    pub compile_limits: CompileLimits,
    /// How often each worker drops instances idle past their time-to-live
    /// (and publishes the statistics to `metrics`).
    pub cleaner_interval: Duration,
    /// Keep each worker thread on one CPU (worker `i` on the `i`-th CPU the
    /// process may run on as the pool starts, round robin), and hand a job
    /// to the worker on the caller's CPU when no other is less busy
    /// (default: off; Linux only). Messages a caller just wrote are then
    /// read from that CPU's caches, and a caller waiting for one message
    /// wakes a thread on its own CPU: on the project's 2-core machine, up to
    /// 5–8% more messages a second for a single module (within the noise
    /// for longer pipelines), 10–17% less engine CPU time a message for
    /// async callers, and a lower latency for one caller sending one
    /// message at a time (`docs/performance.md`, "Pinned workers").
    ///
    /// Nothing is pinned (a warning says why) when there are fewer workers
    /// than CPUs the process may run on — a process sharing the machine by a
    /// quota (a container's, which the default number of workers follows)
    /// would otherwise crowd its workers onto the first CPUs — or when those
    /// CPUs are unknown (not Linux). CPUs added later are not used; a
    /// worker whose CPU goes offline is moved by the kernel. Off by default
    /// because a pinned worker cannot move off a CPU that another program
    /// keeps busy (the jobs then go to the other workers, as they are less
    /// busy), and because a program that places its own threads should
    /// decide.
    pub pin_workers: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            artifact_cache: None,
            artifact_cache_max_bytes: ArtifactCache::DEFAULT_MAX_BYTES,
            bulk_bytes_per_ms: None,
            compile_limits: CompileLimits::default(),
            cleaner_interval: Duration::from_secs(1),
            pin_workers: false,
            caller_threads: 0,
        }
    }
}

type BoxedTask = Box<dyn Task<LocalPool>>;

enum Job {
    Call {
        module: LoadedModule,
        message: Message,
        submitted: Instant,
        reply: oneshot::Sender<Result<Outcome, CallError>>,
    },
    Warm {
        module: LoadedModule,
    },
    /// Start an instance of a module not yet handed out, to prove that it
    /// initialises, and keep it as the first warm one or drop it
    /// (`LocalPool::adopt`); answers whether it was kept.
    Check {
        module: LoadedModule,
        reply: oneshot::Sender<Result<bool, CallError>>,
    },
    Task(BoxedTask),
}

struct Worker {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// The CPU the worker is pinned to ([`PoolConfig::pin_workers`]).
    cpu: Option<usize>,
    /// Jobs sent and not yet done (the one running and those put off to run
    /// again included): a worker busy with a long batch and an empty queue, or
    /// with a batch waiting for a retry's delay, is not taken for an idle one.
    queued: AtomicUsize,
}

struct Shared {
    workers: Vec<Worker>,
    settings: CompileSettings,
    /// Every module loaded, for publishing statistics.
    loaded: Mutex<Vec<Weak<Counters>>>,
    /// [`PoolConfig::caller_threads`].
    caller_threads: usize,
    /// Caller runners given out and not yet dropped.
    callers: Arc<AtomicUsize>,
    /// [`PoolConfig::cleaner_interval`], which caller runners follow too.
    cleaner_interval: Duration,
}

/// Runs modules on worker threads that own warm instances.
///
/// `Send + Sync`: share it behind an `Arc`. Dropping it stops the workers (and
/// their idle-instance cleaners) after the jobs already queued.
pub struct Pool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.shared.workers.len())
            .finish()
    }
}

fn unavailable(module: &str, message: &str) -> CallError {
    CallError::new(ErrorKind::Unavailable, module, message)
}

impl Pool {
    /// Starts the worker threads (and measures the bulk rate unless given).
    pub fn new(config: PoolConfig) -> Result<Pool, StartError> {
        let bulk_bytes_per_ms = match config.bulk_bytes_per_ms {
            Some(rate) => rate,
            None => crate::calibrate::bulk_bytes_per_ms().map_err(StartError::Calibration)?,
        };
        let cache = match &config.artifact_cache {
            Some(dir) => Some(
                ArtifactCache::new(dir)
                    .map_err(|e| StartError::ArtifactCache {
                        dir: dir.clone(),
                        message: e.to_string(),
                    })?
                    .max_bytes(config.artifact_cache_max_bytes),
            ),
            None => None,
        };
        let mut workers = Vec::new();
        let mut receivers = Vec::new();
        let cpus = if config.pin_workers {
            pinned_cpus(config.workers.max(1))
        } else {
            Vec::new()
        };
        for i in 0..config.workers.max(1) {
            let (tx, rx) = mpsc::channel();
            workers.push(Worker {
                jobs: Mutex::new(tx),
                cpu: (!cpus.is_empty()).then(|| cpus[i % cpus.len()]),
                queued: AtomicUsize::new(0),
            });
            receivers.push(rx);
        }
        let shared = Arc::new(Shared {
            workers,
            settings: CompileSettings {
                limits: config.compile_limits.clone(),
                bulk_bytes_per_ms,
                cache,
            },
            loaded: Mutex::new(Vec::new()),
            caller_threads: config.caller_threads,
            callers: Arc::default(),
            cleaner_interval: config.cleaner_interval,
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
                    .map_err(|e| StartError::Thread(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Pool { shared, threads })
    }

    /// A runner for the calling thread: a [`LocalPool`] that runs the modules
    /// this pool loads on the thread that holds it, with warm instances of
    /// its own (dropped when it is, and once idle past their time-to-live
    /// when its holder tidies it: `ModuleRunner::tidy`, which has it publish
    /// its statistics too). Nothing is handed to a worker: what the caller's thread
    /// wrote it reads from its own caches, and no thread is woken. The
    /// thread runs guest code, so it must be one that may block for as long
    /// as a module's budget — not an async runtime's.
    ///
    /// At most [`PoolConfig::caller_threads`] exist at once; past that (or
    /// with none allowed), `Err` says so.
    pub fn caller_runner(&self) -> Result<LocalPool, NoRunner> {
        let most = self.shared.caller_threads;
        let callers = &self.shared.callers;
        callers
            .fetch_update(Ordering::Acquire, Ordering::Acquire, |n| {
                (n < most).then_some(n + 1)
            })
            .map_err(|_| {
                NoRunner::new(if most == 0 {
                    "the pool gives callers' threads none (`PoolConfig::caller_threads` is 0): its modules run on its workers only".to_owned()
                } else {
                    format!("the pool's {most} (`PoolConfig::caller_threads`) are all held by other threads")
                })
            })?;
        Ok(LocalPool::attached(
            callers.clone(),
            self.shared.cleaner_interval,
        ))
    }

    /// The bytes of bulk memory work per millisecond of budget this pool allows.
    pub fn bulk_bytes_per_ms(&self) -> u64 {
        self.shared.settings.bulk_bytes_per_ms
    }

    /// What this pool compiles modules with.
    pub fn compile_settings(&self) -> &CompileSettings {
        &self.shared.settings
    }

    /// Loads a module file; see [`Pool::load`].
    pub fn load_file(
        &self,
        spec: &ModuleSpec,
        path: &std::path::Path,
    ) -> Result<LoadedModule, LoadError> {
        let wasm = std::fs::read(path).map_err(|e| LoadError::Read {
            module: spec.id.clone(),
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        self.load(spec, &wasm)
    }

    /// Checks `wasm` against the sandbox's rules and compiles it as `spec` (or
    /// takes it from the artifact cache), starts a first instance on a worker
    /// thread to prove that it initialises, and starts its warm-up instances:
    /// one on each of up to `warmup_instances` workers (a worker runs one
    /// call at a time; the first instance counts as its worker's).
    /// The module runs wherever its handle is passed: nothing is replaced
    /// here (a hot swap is the owner's to make, by passing the new handle).
    ///
    /// Blocks the calling thread while it compiles and while the worker starts
    /// the instance (no guest code runs on the calling thread); from async
    /// code, call it where blocking is allowed (for example tokio's
    /// `spawn_blocking`).
    pub fn load(&self, spec: &ModuleSpec, wasm: &[u8]) -> Result<LoadedModule, LoadError> {
        let module = LoadedModule::compile(spec, wasm, &self.shared.settings)?.run_by_threads(
            self.shared
                .workers
                .len()
                .saturating_add(self.shared.caller_threads),
        );
        // Instantiate and init once, on a worker (guest code runs only there),
        // so that a module that cannot start is refused before it is used.
        let init = |message: String| LoadError::Init {
            module: spec.id.clone(),
            message,
        };
        let (reply, answer) = oneshot::channel();
        let checker = self.least_queued();
        let check = Job::Check {
            module: module.clone(),
            reply,
        };
        if !self.send(checker, check) {
            return Err(init("the pool is shutting down".into()));
        }
        // (Unconstrained: called from a tokio task whose budget is spent,
        // the wait would never end; see `call_blocking`.)
        let kept = match pollster::block_on(tokio::task::unconstrained(answer)) {
            Ok(Ok(kept)) => kept,
            Ok(Err(e)) => return Err(init(e.message().to_owned())),
            Err(_) => return Err(init("the worker stopped".into())),
        };
        let workers = self.shared.workers.len();
        // The checked instance, if kept, is the checker's warm-up.
        for w in usize::from(kept)..(spec.settings.warmup_instances as usize).min(workers) {
            self.send(
                (checker + w) % workers,
                Job::Warm {
                    module: module.clone(),
                },
            );
        }
        let mut loaded = self.shared.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.retain(|c| c.strong_count() > 0);
        loaded.push(Arc::downgrade(&module.counters));
        Ok(module)
    }

    /// The worker with the fewest jobs; of those, the one pinned to the
    /// caller's CPU if there is one.
    fn least_queued(&self) -> usize {
        let workers = &self.shared.workers;
        let queued = |w: usize| workers[w].queued.load(Ordering::Relaxed);
        let least = (0..workers.len()).min_by_key(|&w| queued(w)).unwrap_or(0);
        if workers[least].cpu.is_none() {
            return least;
        }
        let here = crate::cpu::current();
        (0..workers.len())
            .find(|&w| workers[w].cpu == here && queued(w) <= queued(least))
            .unwrap_or(least)
    }

    fn send(&self, worker: usize, job: Job) -> bool {
        self.try_send(worker, job).is_ok()
    }

    /// Hands `job` to `worker`; gives it back (boxed: it only happens while
    /// the pool shuts down) when the worker has stopped.
    fn try_send(&self, worker: usize, job: Job) -> Result<(), Box<Job>> {
        let w = &self.shared.workers[worker];
        w.queued.fetch_add(1, Ordering::Relaxed);
        let sent = w.jobs.lock().unwrap_or_else(|p| p.into_inner()).send(job);
        sent.map_err(|mpsc::SendError(job)| {
            w.queued.fetch_sub(1, Ordering::Relaxed);
            Box::new(job)
        })
    }

    /// Runs `module` on `message` on a worker thread. Waits (without blocking
    /// a thread) while the module runs `max_concurrent_instances` calls or may
    /// not create another instance yet. A call whose future is dropped before
    /// a worker takes it up does not run.
    pub async fn call(
        &self,
        module: &LoadedModule,
        message: &Message,
    ) -> Result<Outcome, CallError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Call {
            module: module.clone(),
            message: message.clone(),
            submitted: Instant::now(),
            reply,
        };
        if !self.send(self.least_queued(), job) {
            return Err(unavailable(module.id(), "the pool is shutting down"));
        }
        answer
            .await
            .map_err(|_| unavailable(module.id(), "the worker stopped before answering"))?
    }

    /// [`Pool::call`] for callers outside an async runtime: blocks this thread.
    pub fn call_blocking(
        &self,
        module: &LoadedModule,
        message: &Message,
    ) -> Result<Outcome, CallError> {
        // Unconstrained: called (against its documentation) from a tokio
        // task, each wait spends the task's budget, and once it is spent
        // tokio puts off every wake-up until the task yields, which it never
        // does while blocked here: the call would never end.
        pollster::block_on(tokio::task::unconstrained(self.call(module, message)))
    }

    /// Publishes every loaded module's statistics to the `metrics` facade now
    /// (workers also do on their cleaner's beat).
    pub fn publish_metrics(&self) {
        crate::stats::describe();
        let loaded = self.shared.loaded.lock().unwrap_or_else(|p| p.into_inner());
        for counters in loaded.iter().filter_map(Weak::upgrade) {
            counters.publish();
        }
        drop(loaded);
        metrics::gauge!("rustmq_etl_pool_caller_runners").set(self.caller_runners() as f64);
        metrics::gauge!("rustmq_etl_pool_caller_runners_limit")
            .set(self.shared.caller_threads as f64);
    }

    /// Callers' runners given out and not yet dropped
    /// ([`Pool::caller_runner`]; at most [`PoolConfig::caller_threads`]).
    pub fn caller_runners(&self) -> usize {
        self.shared.callers.load(Ordering::Acquire)
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

impl Engine for Pool {
    type Module = LoadedModule;
    type Runner = LocalPool;

    fn load(
        &self,
        spec: &ModuleSpec,
        wasm: &[u8],
    ) -> Result<LoadedModule, rustmq_etl_core::LoadError> {
        Pool::load(self, spec, wasm).map_err(Into::into)
    }

    fn version(module: &LoadedModule) -> u64 {
        module.version()
    }

    fn submit(&self, task: BoxedTask) -> Result<(), BoxedTask> {
        self.try_send(self.least_queued(), Job::Task(task))
            .map_err(|job| match *job {
                Job::Task(task) => task,
                _ => unreachable!("a task was sent"),
            })
    }

    fn threads(&self) -> usize {
        self.shared.workers.len()
    }

    fn caller_runner(&self) -> Result<LocalPool, NoRunner> {
        Pool::caller_runner(self)
    }

    fn publish_metrics(&self) {
        Pool::publish_metrics(self);
    }
}

/// One worker thread: its warm instances, and the jobs it put off.
struct WorkerState {
    local: LocalPool,
    waiting: Waiting<Job>,
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

    /// Runs `job`; says whether it is done (not put off to run again).
    fn run(&mut self, job: Job) -> bool {
        match job {
            Job::Call {
                module,
                message,
                submitted,
                reply,
            } => {
                if reply.is_closed() {
                    return true;
                }
                let called = self
                    .contain("running a call", |local| {
                        local.call(&module, CallRequest::new(&message))
                    })
                    .unwrap_or_else(|text| {
                        let now = Instant::now();
                        let error = rustmq_etl_core::CallError::new(ErrorKind::Trap, text);
                        Ok(
                            rustmq_etl_core::CallReport::new(
                                Err(error),
                                module.version(),
                                now,
                                now,
                            )
                            .queued(now.saturating_duration_since(submitted)),
                        )
                    });
                match called {
                    // Run it when the module may start another call, serving
                    // other calls meanwhile.
                    Err(busy) => {
                        self.waiting.push(
                            busy.until,
                            Job::Call {
                                module,
                                message,
                                submitted,
                                reply,
                            },
                        );
                        false
                    }
                    Ok(report) => {
                        let result = report
                            .result
                            .map_err(|e| CallError::new(e.kind(), module.id(), e.message()));
                        let _ = reply.send(result);
                        true
                    }
                }
            }
            Job::Warm { module } => {
                if let Ok(Err(e)) = self.contain("warming up", |local| local.warm(&module, 1)) {
                    log::warn!("module {:?}: warm-up failed: {e}", module.id());
                }
                true
            }
            Job::Check { module, reply } => {
                let started = self
                    .contain("starting an instance", |local| {
                        crate::instance::WarmInstance::new(&module.compiled, None)
                            .map(|instance| local.adopt(&module, instance))
                    })
                    .unwrap_or_else(|text| Err(unavailable(module.id(), &text)));
                let _ = reply.send(started);
                true
            }
            Job::Task(mut task) => {
                if task.is_cancelled() {
                    return true;
                }
                match self.contain("running a task", |local| task.run(local)) {
                    Ok(Step::WaitUntil(at)) => {
                        self.waiting.push(at, Job::Task(task));
                        false
                    }
                    // A task that panicked is dropped: whoever waits for it
                    // sees it gone.
                    Ok(Step::Done) | Err(_) => true,
                }
            }
        }
    }

    /// Runs the jobs that are due, taking each one done off `queued`;
    /// returns when the next one is.
    fn run_due(&mut self, queued: &AtomicUsize) -> Option<Instant> {
        while let Some(job) = self.waiting.pop_due(Instant::now()) {
            if self.run(job) {
                queued.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.waiting.next_due()
    }
}

/// The CPUs `workers` pinned workers go to, round robin: none (and a warning)
/// when the CPUs the process may run on are unknown, or more than the
/// workers — then the process shares the machine by a quota (a container's,
/// which `available_parallelism`, the default number of workers, counts) or
/// was given fewer workers than CPUs, and pinning would crowd the workers of
/// every such process onto the first CPUs while the others idle.
fn pinned_cpus(workers: usize) -> Vec<usize> {
    let cpus = crate::cpu::allowed();
    if cpus.is_empty() {
        log::warn!("rustmq-etl: pin_workers: the CPUs this process may run on are unknown; the workers run unpinned");
    } else if cpus.len() > workers {
        log::warn!(
            "rustmq-etl: pin_workers: {workers} workers for {} CPUs this process may run on; the workers run unpinned (pinning needs a worker for every CPU)",
            cpus.len()
        );
        return Vec::new();
    }
    cpus
}

fn worker(index: usize, jobs: mpsc::Receiver<Job>, shared: Arc<Shared>, interval: Duration) {
    if let Some(cpu) = shared.workers[index].cpu {
        if let Err(e) = crate::cpu::pin_this_thread(cpu) {
            // Jobs still come to it first from callers on that CPU: no harm
            // but a missed cache.
            log::warn!(
                "rustmq-etl worker {index}: cannot keep it on CPU {cpu} ({e}); it runs unpinned"
            );
        }
    }
    let mut state = WorkerState {
        local: LocalPool::new(),
        waiting: Waiting::new(),
    };
    // Checked after every job: the coarse clock costs a fraction of `Instant::now`.
    let interval_coarse = coarsetime::Duration::from(interval);
    let mut last_clean = coarsetime::Instant::now_without_cache_update();
    let mut open = true;
    let queued = &shared.workers[index].queued;
    while open || !state.waiting.is_empty() {
        let wait = match state.run_due(queued) {
            Some(at) => at.saturating_duration_since(Instant::now()).min(interval),
            None => interval,
        };
        if open {
            match jobs.recv_timeout(wait) {
                Ok(job) => {
                    if state.run(job) {
                        queued.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
            }
        } else {
            // Shutting down: only the jobs put off are left to run.
            std::thread::sleep(wait);
        }
        let now = coarsetime::Instant::now_without_cache_update();
        if now.duration_since(last_clean) >= interval_coarse {
            let _ = state.contain("dropping idle instances", LocalPool::evict_idle);
            last_clean = now;
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn pinned(workers: usize) -> Pool {
        Pool::new(PoolConfig {
            workers,
            bulk_bytes_per_ms: Some(1_000_000),
            pin_workers: true,
            ..PoolConfig::default()
        })
        .unwrap()
    }

    /// Answers the thread it ran on and that thread's CPU.
    struct Where(mpsc::Sender<(String, Option<usize>)>);

    impl Task<LocalPool> for Where {
        fn run(&mut self, _: &mut LocalPool) -> Step {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            let _ = self.0.send((name, crate::cpu::current()));
            Step::Done
        }
    }

    /// The CPUs this process may run on; a note when there is one only,
    /// where a pinned worker cannot be told from an unpinned one.
    fn allowed() -> Vec<usize> {
        let cpus = crate::cpu::allowed();
        assert!(!cpus.is_empty(), "this process may run on some CPU");
        if cpus.len() == 1 {
            eprintln!("note: one CPU allowed ({cpus:?}): pinning is not seen");
        }
        cpus
    }

    #[test]
    fn pinned_workers_run_only_on_their_cpus() {
        let cpus = allowed();
        // One worker more than CPUs: pinned round robin.
        let pool = pinned(cpus.len() + 1);
        let (tx, rx) = mpsc::channel();
        for _ in 0..200 {
            Engine::submit(&pool, Box::new(Where(tx.clone())))
                .map_err(drop)
                .unwrap();
        }
        drop(tx);
        let ran: Vec<_> = rx.iter().collect();
        assert_eq!(ran.len(), 200);
        for (name, cpu) in ran {
            let index: usize = name
                .strip_prefix("rustmq-etl-wasm-")
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(cpu, Some(cpus[index % cpus.len()]), "worker {index}");
        }
    }

    #[test]
    fn a_job_goes_to_the_worker_on_the_callers_cpu_unless_another_is_less_busy() {
        let cpus = allowed();
        let pool = pinned(cpus.len());
        for (w, &cpu) in cpus.iter().enumerate() {
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    crate::cpu::pin_this_thread(cpu).unwrap();
                    assert_eq!(pool.least_queued(), w, "from CPU {cpu}, all idle");
                    if cpus.len() > 1 {
                        let queued = &pool.shared.workers[w].queued;
                        queued.fetch_add(1, Ordering::Relaxed);
                        assert_ne!(pool.least_queued(), w, "from CPU {cpu}, its worker busy");
                        queued.fetch_sub(1, Ordering::Relaxed);
                    }
                });
            });
        }
        // Unpinned, the least busy worker is the first of the least busy.
        let plain = Pool::new(PoolConfig {
            workers: 2,
            bulk_bytes_per_ms: Some(1_000_000),
            ..PoolConfig::default()
        })
        .unwrap();
        assert!(plain.shared.workers.iter().all(|w| w.cpu.is_none()));
        assert_eq!(plain.least_queued(), 0);
    }

    /// Fewer workers than CPUs (a container's quota, say): none is pinned,
    /// or they would all crowd onto the first CPUs.
    #[test]
    fn fewer_workers_than_cpus_are_not_pinned() {
        let cpus = allowed();
        let pool = pinned(cpus.len().saturating_sub(1).max(1));
        let pinned = pool.shared.workers.iter().any(|w| w.cpu.is_some());
        assert_eq!(pinned, cpus.len() == 1, "{cpus:?}");
    }
}
