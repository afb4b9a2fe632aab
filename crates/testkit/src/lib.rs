//! A plain-Rust stand-in for the rustmq-etl engine, for testing the
//! orchestrator through the contract of `rustmq-etl-core` without WebAssembly.
//!
//! A module is a Rust function from a message to a [`Behaviour`]: an outcome
//! or a failure, after taking some (real) time. The stand-in honours the
//! contract as the wasmer pool does: a call that would take longer than the
//! module's `execution_timeout_ms` fails with `timeout` when its budget runs
//! out, one that would pass the request's deadline fails with the deadline's
//! kind when it passes, tasks that wait are put off without holding a thread,
//! and cancelled tasks never run. It records every call.
//!
//! ```
//! use rustmq_etl_core::{Engine, ModuleSpec, Outcome};
//! use rustmq_etl_testkit::{Behaviour, StandIn};
//!
//! let engine = StandIn::new(2);
//! engine.module("upper", |m| Behaviour::ok(Outcome::Unchanged));
//! let module = engine.load(&ModuleSpec::new("upper"), b"").unwrap();
//! assert_eq!(StandIn::version(&module), 1);
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustmq_etl_core::{
    Busy, CallError, CallReport, CallRequest, Engine, ErrorKind, LoadError, LoadStep, Message,
    ModuleRunner, ModuleSpec, NoRunner, Outcome, Step, Task, Waiting,
};

/// What a stand-in module does on one call.
#[derive(Debug, Clone)]
pub struct Behaviour {
    result: Result<Outcome, CallError>,
    takes: Duration,
    busy_until: Option<Instant>,
}

impl Behaviour {
    /// Answers `outcome` at once.
    pub fn ok(outcome: Outcome) -> Self {
        Behaviour {
            result: Ok(outcome),
            takes: Duration::ZERO,
            busy_until: None,
        }
    }

    /// Fails with `kind` at once.
    pub fn fail(kind: ErrorKind, message: impl Into<String>) -> Self {
        Behaviour {
            result: Err(CallError::new(kind, message)),
            takes: Duration::ZERO,
            busy_until: None,
        }
    }

    /// Cannot start before `until`: the runner answers `Busy`.
    pub fn busy(until: Instant) -> Self {
        Behaviour {
            result: Ok(Outcome::Unchanged),
            takes: Duration::ZERO,
            busy_until: Some(until),
        }
    }

    /// Runs for `time` (really: the engine thread sleeps) before answering;
    /// past the module's budget or the request's deadline, it is stopped there.
    pub fn after(mut self, time: Duration) -> Self {
        self.takes = time;
        self
    }
}

type Function = Arc<dyn Fn(&Message) -> Behaviour + Send + Sync>;

/// A module loaded by the stand-in.
#[derive(Clone)]
pub struct StandInModule {
    spec: Arc<ModuleSpec>,
    version: u64,
    function: Function,
    calls: Arc<Mutex<Vec<Message>>>,
}

impl std::fmt::Debug for StandInModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandInModule")
            .field("id", &self.spec.id)
            .field("version", &self.version)
            .finish()
    }
}

impl StandInModule {
    /// The occurrence this module was loaded as.
    pub fn spec(&self) -> &ModuleSpec {
        &self.spec
    }

    /// The messages it was called on, in order (calls that ran only).
    pub fn calls(&self) -> Vec<Message> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An engine thread's runner, or a caller's (which notes the modules it is
/// readied for: [`StandIn::prepared`]).
#[derive(Debug, Default)]
pub struct StandInRunner {
    prepared: Option<Arc<Mutex<Vec<String>>>>,
}

impl ModuleRunner for StandInRunner {
    type Module = StandInModule;

    fn call(
        &mut self,
        module: &StandInModule,
        request: CallRequest<'_>,
    ) -> Result<CallReport, Busy> {
        let started = request.get_clock().unwrap_or_else(Instant::now);
        // The module's own budget starts when it does, as the pool's watchdog
        // counts it, not at the caller's reading.
        let own = (
            Instant::now() + Duration::from_millis(module.spec.settings.execution_timeout_ms),
            ErrorKind::Timeout,
        );
        let (deadline, kind) = match request.get_deadline() {
            Some((at, kind)) if at < own.0 => (at, kind),
            _ => own,
        };
        let report = |result| CallReport::new(result, module.version, started, Instant::now());
        if deadline <= started {
            return Ok(report(Err(CallError::new(
                kind,
                "the deadline passed before the call",
            ))));
        }
        let behaviour = (module.function)(request.message());
        if let Some(until) = behaviour.busy_until.filter(|&u| u > started) {
            return Err(Busy { until });
        }
        module
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request.message().clone());
        let result = if started + behaviour.takes > deadline {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            Err(CallError::new(kind, "ran past its deadline"))
        } else {
            std::thread::sleep(behaviour.takes);
            behaviour.result
        };
        Ok(report(result))
    }

    fn prepare(&mut self, module: &StandInModule) {
        if let Some(prepared) = &self.prepared {
            prepared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(module.spec.id.clone());
        }
    }
}

type BoxedTask = Box<dyn Task<StandInRunner>>;

/// The stand-in engine: modules are Rust functions registered by id; tasks
/// run on `threads` plain threads.
pub struct StandIn {
    functions: Mutex<HashMap<String, Result<Function, String>>>,
    versions: AtomicU64,
    queues: Vec<Mutex<mpsc::Sender<BoxedTask>>>,
    next: AtomicU64,
    threads: Vec<JoinHandle<()>>,
    /// The modules callers' runners were readied for, in turn.
    prepared: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("threads", &self.queues.len())
            .finish()
    }
}

impl StandIn {
    /// An engine with `threads` threads (0 counts as 1) and no modules.
    pub fn new(threads: usize) -> Self {
        let mut queues = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, rx) = mpsc::channel::<BoxedTask>();
            queues.push(Mutex::new(tx));
            handles.push(
                std::thread::Builder::new()
                    .name(format!("stand-in-{i}"))
                    .spawn(move || run_thread(rx))
                    .expect("cannot start a stand-in thread"),
            );
        }
        StandIn {
            functions: Mutex::new(HashMap::new()),
            versions: AtomicU64::new(1),
            queues,
            next: AtomicU64::new(0),
            threads: handles,
            prepared: Arc::default(),
        }
    }

    /// The ids of the modules callers' runners were readied for
    /// (`ModuleRunner::prepare`), in turn.
    pub fn prepared(&self) -> Vec<String> {
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Registers (or replaces) the function behind module `id`; loads made
    /// afterwards use it.
    pub fn module(
        &self,
        id: &str,
        function: impl Fn(&Message) -> Behaviour + Send + Sync + 'static,
    ) {
        self.functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), Ok(Arc::new(function)));
    }

    /// Makes loading module `id` fail with `message`, as a module that does
    /// not start (`LoadStep::Start`).
    pub fn refuse(&self, id: &str, message: &str) {
        self.functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), Err(message.to_owned()));
    }
}

fn run_thread(tasks: mpsc::Receiver<BoxedTask>) {
    let mut runner = StandInRunner::default();
    let mut waiting: Waiting<BoxedTask> = Waiting::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        while let Some(task) = waiting.pop_due(Instant::now()) {
            run_task(task, &mut runner, &mut waiting);
        }
        let wait = waiting.next_due().map_or(Duration::from_millis(100), |at| {
            at.saturating_duration_since(Instant::now())
        });
        if !open {
            std::thread::sleep(wait);
            continue;
        }
        match tasks.recv_timeout(wait) {
            Ok(task) => run_task(task, &mut runner, &mut waiting),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
        }
    }
}

fn run_task(mut task: BoxedTask, runner: &mut StandInRunner, waiting: &mut Waiting<BoxedTask>) {
    if task.is_cancelled() {
        return;
    }
    if let Step::WaitUntil(at) = task.run(runner) {
        waiting.push(at, task);
    }
}

impl Engine for StandIn {
    type Module = StandInModule;
    type Runner = StandInRunner;

    fn load(&self, spec: &ModuleSpec, _bytes: &[u8]) -> Result<StandInModule, LoadError> {
        let functions = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        match functions.get(&spec.id) {
            Some(Ok(function)) => Ok(StandInModule {
                spec: Arc::new(spec.clone()),
                version: self.versions.fetch_add(1, Ordering::Relaxed),
                function: function.clone(),
                calls: Arc::default(),
            }),
            Some(Err(message)) => Err(LoadError::new(LoadStep::Start, &spec.id, message.clone())),
            None => Err(LoadError::new(
                LoadStep::Read,
                &spec.id,
                "no such stand-in module",
            )),
        }
    }

    fn version(module: &StandInModule) -> u64 {
        module.version
    }

    fn submit(&self, task: BoxedTask) -> Result<(), BoxedTask> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.queues.len();
        self.queues[i]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(task)
            .map_err(|mpsc::SendError(task)| task)
    }

    fn threads(&self) -> usize {
        self.queues.len()
    }

    /// Any number: stand-in modules have no instances to bound.
    fn caller_runner(&self) -> Result<StandInRunner, NoRunner> {
        Ok(StandInRunner {
            prepared: Some(self.prepared.clone()),
        })
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        for queue in &self.queues {
            let (closed, _) = mpsc::channel();
            *queue.lock().unwrap_or_else(|p| p.into_inner()) = closed;
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
