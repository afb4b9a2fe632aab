//! The contract between the orchestrator and whatever runs modules: the
//! wasmer instance pool, or a plain Rust stand-in in tests.
//!
//! An [`Engine`] loads modules and owns threads, each with a [`ModuleRunner`]
//! that calls modules synchronously on that thread. The orchestrator does not
//! hop threads per call: it hands an engine thread a [`Task`] — a batch of
//! messages — which runs every message's whole chain of calls there, through
//! that thread's runner. A task that must wait (a retry's backoff, a module
//! that may not start another instance yet) says until when, and the thread
//! serves other tasks meanwhile: no thread ever sleeps for a task.
//!
//! Like tower's `Service`, the request is taken by value and a dropped task
//! must not leave work behind: an engine asks [`Task::is_cancelled`] before it
//! runs a task, and a cancelled task is dropped unrun, releasing what it holds.
//!
//! A caller that owns a thread may also ask the engine for a runner of its
//! own ([`Engine::caller_runner`]) and run tasks on that thread: nothing is
//! handed over, and the caller's thread waits out a task's waits itself.

use std::time::{Duration, Instant};

use crate::{CallError, ErrorKind, Message, ModuleSpec, Outcome};

/// One call of a module on a message. Built with [`CallRequest::new`] and
/// grown with setters, so that a new parameter does not break callers (as
/// regex-automata's `Input`).
#[derive(Debug, Clone, Copy)]
pub struct CallRequest<'m> {
    message: &'m Message,
    deadline: Option<(Instant, ErrorKind)>,
    clock: Option<Instant>,
}

impl<'m> CallRequest<'m> {
    /// A call on `message`, bounded only by the module's own time budget.
    pub fn new(message: &'m Message) -> Self {
        CallRequest {
            message,
            deadline: None,
            clock: None,
        }
    }

    /// The call must also end by `at`; if that, rather than the module's own
    /// budget, stops it, it fails with `kind` (the orchestrator passes
    /// `StageTimeout` or `PipelineTimeout`). A call whose deadline has
    /// passed (by the request's clock) fails at once without running. A
    /// later deadline than one set before is ignored: the tightest applies.
    pub fn deadline(mut self, at: Instant, kind: ErrorKind) -> Self {
        if self.deadline.is_none_or(|(earlier, _)| at < earlier) {
            self.deadline = Some((at, kind));
        }
        self
    }

    /// The caller's latest reading of the clock, taken just before the call
    /// (typically the [`CallReport::ended`] of its previous call): the runner
    /// counts the call's time from it and reads the clock once per call
    /// instead of twice. Without it the runner reads its own. A clock reading
    /// costs tens of nanoseconds, a sizeable part of a small module's call.
    /// The reading must be recent: the call's time includes whatever the
    /// caller did since, and a passed deadline is judged by it (the module's
    /// own budget and the engine's throttles use the engine's own clock).
    pub fn clock(mut self, now: Instant) -> Self {
        self.clock = Some(now);
        self
    }

    /// The message the module runs on.
    pub fn message(&self) -> &'m Message {
        self.message
    }

    /// The deadline set with [`CallRequest::deadline`], and the kind of the
    /// failure if it stops the call.
    pub fn get_deadline(&self) -> Option<(Instant, ErrorKind)> {
        self.deadline
    }

    /// The clock reading set with [`CallRequest::clock`].
    pub fn get_clock(&self) -> Option<Instant> {
        self.clock
    }
}

/// What one call did. Its fields are read directly; a runner builds one with
/// [`CallReport::new`] (it is `non_exhaustive`, so that a new field does not
/// break runners outside this workspace, such as one for another ABI).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallReport {
    /// Its outcome, or how it failed.
    pub result: Result<Outcome, CallError>,
    /// The version of the module that ran (a new load is a new version).
    pub version: u64,
    /// How long the call waited before it started (zero on an engine
    /// thread's own runner).
    pub queued: Duration,
    /// How long it ran: from the request's clock (or the runner's own
    /// reading as it started) to `ended`.
    pub ran: Duration,
    /// The runner's reading of the clock as the call ended.
    pub ended: Instant,
    /// How many times the module was called for it (the runner calls once;
    /// the orchestrator counts its retries).
    pub attempts: u32,
}

impl CallReport {
    /// One call of `version`, run from `started` (the request's clock, or
    /// the runner's own reading) to `ended`, which did not wait to start.
    #[inline]
    pub fn new(
        result: Result<Outcome, CallError>,
        version: u64,
        started: Instant,
        ended: Instant,
    ) -> Self {
        CallReport {
            result,
            version,
            queued: Duration::ZERO,
            ran: ended.saturating_duration_since(started),
            ended,
            attempts: 1,
        }
    }

    /// The call waited this long before it started (on another thread's
    /// queue, say).
    #[inline]
    pub fn queued(mut self, queued: Duration) -> Self {
        self.queued = queued;
        self
    }
}

/// A runner could not start the call now: nothing ran. Call again at `until`
/// (a module's instance creations are throttled, or it already runs as many
/// instances as it may).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// When the call may start.
    pub until: Instant,
}

/// Calls modules on the thread that owns it (an engine thread's warm
/// instances, for the wasmer pool).
pub trait ModuleRunner {
    /// A loaded module, as its engine hands it out.
    type Module;

    /// Runs `module` on the request's message, within the request's deadline
    /// and the module's own budget; `Err(Busy)` if it cannot start now.
    fn call(&mut self, module: &Self::Module, request: CallRequest<'_>)
        -> Result<CallReport, Busy>;

    /// Lets go of what the runner keeps past its time (instances idle past
    /// their time-to-live, those of versions no longer used), if that is
    /// due. An engine tidies its own threads' runners; the holder of a
    /// caller's runner ([`Engine::caller_runner`]) calls this between tasks
    /// and while it has none. It runs no module.
    fn tidy(&mut self) {}

    /// Readies the runner for `module` ahead of its first call (the wasmer
    /// pool: one warm instance, if the module caches instances and asks for
    /// warm-up ones, as its workers are warmed when it loads). The
    /// holder of a caller's runner calls it for the modules in service. It
    /// calls nothing but the module's own start.
    fn prepare(&mut self, _module: &Self::Module) {}
}

/// What a task asks of its thread after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The task is finished; drop it.
    Done,
    /// Run the task again at (or after) this moment; run others meanwhile.
    WaitUntil(Instant),
}

/// Work for an engine thread: runs with that thread's runner, perhaps in
/// several goes.
pub trait Task<R>: Send {
    /// Does as much of the work as it can now.
    fn run(&mut self, runner: &mut R) -> Step;

    /// Whether nobody waits for the result any more: the engine then drops
    /// the task without running it.
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// Why a module could not be loaded (or, made with
/// [`LoadError::configuration`], why the configuration itself could not be
/// put in service), and at which [`LoadStep`]. Nothing was swapped in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct LoadError {
    step: LoadStep,
    module: String,
    message: String,
}

/// Where putting a module in service failed: what a program may act on (a
/// file not there yet can be waited for; a module that does not compile must
/// be replaced; one that does not start may want other settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoadStep {
    /// The configuration as a whole, of no one module (it does not plan, or
    /// names no such pipeline).
    Configuration,
    /// Reading the module's bytes.
    Read,
    /// The bytes are not a module this engine runs as configured (for the
    /// wasmer pool: not WebAssembly, refused by the sandbox's rules, which
    /// include starting within its memory limit, not of the ABI, or with
    /// unusable limits).
    Compile,
    /// A first instance could not be started or initialised (its init may
    /// have rejected its `custom_config`).
    Start,
}

impl LoadError {
    /// `module` failed at `step` for `message`.
    pub fn new(step: LoadStep, module: impl Into<String>, message: impl Into<String>) -> Self {
        LoadError {
            step,
            module: module.into(),
            message: message.into(),
        }
    }

    /// An error of the configuration as a whole, of no one module.
    pub fn configuration(message: impl Into<String>) -> Self {
        LoadError::new(LoadStep::Configuration, "", message)
    }

    /// Where it failed.
    pub fn step(&self) -> LoadStep {
        self.step
    }

    /// The module's id; empty for an error of the configuration as a whole.
    pub fn module(&self) -> &str {
        &self.module
    }

    fn describe(&self) -> String {
        if self.module.is_empty() {
            self.message.clone()
        } else {
            format!("module {:?}: {}", self.module, self.message)
        }
    }

    /// What went wrong, for a person.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Why an engine gave no runner for a caller's thread
/// ([`Engine::caller_runner`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no runner for this thread: {message}")]
pub struct NoRunner {
    message: String,
}

impl NoRunner {
    /// An engine's reason.
    pub fn new(message: impl Into<String>) -> Self {
        NoRunner {
            message: message.into(),
        }
    }

    /// The engine's reason, for a person.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Loads modules and runs tasks on threads that each own a runner. The
/// wasmer pool implements it; so does a plain Rust stand-in for tests.
pub trait Engine: Send + Sync + 'static {
    /// A loaded module: cheap to clone, shared by every thread.
    type Module: Clone + Send + Sync + 'static;
    /// What calls modules on an engine thread.
    type Runner: ModuleRunner<Module = Self::Module>;

    /// Compiles `bytes` (the module's file as read: WebAssembly for the
    /// wasmer pool, whatever another engine runs for another) as `spec` and
    /// proves that it starts (blocks the calling thread, never runs guest
    /// code on it). The module is not yet used by anything: the caller
    /// decides when to swap it in.
    fn load(&self, spec: &ModuleSpec, bytes: &[u8]) -> Result<Self::Module, LoadError>;

    /// The version of a loaded module (every load is a new one).
    fn version(module: &Self::Module) -> u64;

    /// Runs `task` on one of the engine's threads. Gives the task back if the
    /// engine is shutting down.
    fn submit(&self, task: Box<dyn Task<Self::Runner>>) -> Result<(), Box<dyn Task<Self::Runner>>>;

    /// How many threads run tasks.
    fn threads(&self) -> usize;

    /// A runner for a thread of the caller's own, which then runs tasks
    /// itself (`Task::run` with it) instead of handing them to the engine's
    /// threads. It calls the modules this engine loads, within their limits
    /// (instances at once among them), and holds its own warm instances
    /// until it is dropped. `Err` if the engine gives no more (it may bound
    /// how many exist at once) or none at all, as by default.
    fn caller_runner(&self) -> Result<Self::Runner, NoRunner> {
        Err(NoRunner::new(
            "this engine runs tasks on its own threads only",
        ))
    }

    /// Publishes the engine's own statistics (instances, calls) to the
    /// `metrics` facade now, for an exporter about to render them.
    fn publish_metrics(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_error_names_its_module_unless_it_is_the_configurations() {
        let error = LoadError::new(LoadStep::Compile, "m", "bad");
        assert_eq!(error.to_string(), r#"module "m": bad"#);
        assert_eq!(error.step(), LoadStep::Compile);
        let whole = LoadError::configuration(r#"no pipeline "x""#);
        assert_eq!(whole.to_string(), r#"no pipeline "x""#);
        assert_eq!(
            (whole.module(), whole.step()),
            ("", LoadStep::Configuration)
        );
    }

    #[test]
    fn a_report_runs_from_its_start_to_its_end_and_waits_only_when_told() {
        let started = Instant::now();
        let ended = started + Duration::from_micros(5);
        let report = CallReport::new(Ok(Outcome::Unchanged), 7, started, ended);
        assert_eq!(report.ran, Duration::from_micros(5));
        assert_eq!(report.ended, ended);
        assert_eq!((report.version, report.attempts), (7, 1));
        assert_eq!(report.queued, Duration::ZERO);
        let queued = report.queued(Duration::from_millis(2));
        assert_eq!(queued.queued, Duration::from_millis(2));
        // A start after the end (a stale reading the other way) is no time.
        let report = CallReport::new(Ok(Outcome::Dropped), 7, ended, started);
        assert_eq!(report.ran, Duration::ZERO);
    }
}
