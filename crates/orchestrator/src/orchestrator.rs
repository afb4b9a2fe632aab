//! The orchestrator: what a broker holds to run messages through its
//! pipelines.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use rustmq_etl_config::Config;
use rustmq_etl_core::{Engine, LoadError, Message, ModuleRunner, ModuleSpec, NoRunner, Step, Task};
use tokio::sync::{oneshot, Semaphore, TryAcquireError};

use crate::breaker::CircuitState;
use crate::options::Options;
use crate::plan::Plan;
use crate::result::Processed;
use crate::run::{Batch, Run};
use crate::snapshot::{build, Keep, ModuleSource, Modules, Snapshot};
use crate::stats::Stats;

/// Runs messages through pipelines on an [`Engine`]. Cheap to clone (all
/// clones share one configuration, engine and set of metrics); `Send + Sync`.
pub struct Orchestrator<E: Engine> {
    inner: Arc<Inner<E>>,
}

impl<E: Engine> std::fmt::Debug for Orchestrator<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = self.inner.current.load();
        f.debug_struct("Orchestrator")
            .field("config_version", &snapshot.version)
            .field("pipelines", &snapshot.plan.pipelines().len())
            .field("module_occurrences", &snapshot.plan.module_count())
            .field("options", &self.inner.keep.options)
            .finish_non_exhaustive()
    }
}

impl<E: Engine> Clone for Orchestrator<E> {
    fn clone(&self) -> Self {
        Orchestrator {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<E: Engine> {
    keep: Keep<E>,
    current: ArcSwap<Snapshot<E>>,
    reloading: Mutex<()>,
    versions: AtomicU64,
    /// One permit a message in flight; a batch holds its messages' permits
    /// until the engine is done with it (or drops it unrun), whatever
    /// became of the caller's future.
    in_flight: Arc<Semaphore>,
    /// The messages admitted, and a drain's wake-up.
    admission: Arc<Admission>,
    /// The messages of calls waiting for room ([`Orchestrator::waiting`]).
    waiting: AtomicUsize,
    /// Whether the last reload of a configuration or of the modules (or the
    /// start) was applied or found nothing to change, and when the last that
    /// was ended, in milliseconds since the Unix epoch:
    /// `rustmq_etl_config_last_reload_*`. A pipeline switch is no such
    /// reload: it says nothing of the configuration asked for. Set and
    /// published under the lock, so that the gauges end as the last says.
    last_reload: Mutex<(bool, u64)>,
    /// The most messages in flight ([`Options::max_in_flight`], within the
    /// semaphore's range).
    max_in_flight: usize,
    seeds: AtomicU64,
    /// Reloads so far by result, in [`RELOAD_RESULTS`]' order: published
    /// with every [`Orchestrator::publish_metrics`], so that a recorder
    /// installed after them still gets them.
    reloads: [AtomicU64; 3],
    /// Held while the snapshot in service is swapped and the version gauge
    /// set, and while `publish_metrics` publishes what it says of the
    /// configuration in service: a publish never sets a gauge back to a
    /// version a reload just replaced.
    version_gauge: Mutex<()>,
}

/// The `result` label of `rustmq_etl_reloads_total`.
const RELOAD_RESULTS: [&str; 3] = ["applied", "unchanged", "rejected"];

/// Places among the messages in flight: given back when dropped, and a
/// drain waiting told so.
pub(crate) struct Room {
    /// `None` only while it is dropped.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    admission: Arc<Admission>,
}

/// What the rooms handed out are counted and told on.
#[derive(Default)]
struct Admission {
    /// Told whenever a [`Room`] is given back: what a drain waits on.
    given_back: tokio::sync::Notify,
    /// The places in rooms handed out: the messages admitted. (The
    /// semaphore's free permits do not tell: a caller waiting for room takes
    /// permits as they are given back, before it has all it asked for.)
    admitted: AtomicUsize,
}

impl Room {
    /// Room just admitted.
    fn new(permit: tokio::sync::OwnedSemaphorePermit, admission: &Arc<Admission>) -> Room {
        admission
            .admitted
            .fetch_add(permit.num_permits(), Ordering::Relaxed);
        Room {
            permit: Some(permit),
            admission: admission.clone(),
        }
    }

    /// `n` of its places, as a room of their own (already counted).
    fn split(&mut self, n: usize) -> Option<Room> {
        let permit = self.permit.as_mut()?.split(n)?;
        Some(Room {
            permit: Some(permit),
            admission: self.admission.clone(),
        })
    }

    fn places(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        // Given back first, then told: a drain woken looks at the count.
        if let Some(permit) = self.permit.take() {
            let places = permit.num_permits();
            // Released before it is uncounted: meanwhile the places count
            // as in flight, never as held by callers waiting.
            drop(permit);
            self.admission.admitted.fetch_sub(places, Ordering::Relaxed);
        }
        self.admission.given_back.notify_waiters();
    }
}

/// A configuration that could not be put in service. The one in service
/// keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the configuration was not applied: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
#[non_exhaustive]
pub struct ReloadError {
    /// Every module that could not be read, compiled or started (or the
    /// configuration's own error).
    pub errors: Vec<LoadError>,
}

impl ReloadError {
    /// A reload refused for `errors` (for a program that tests what it does
    /// when one is).
    pub fn new(errors: Vec<LoadError>) -> Self {
        ReloadError { errors }
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadReport {
    /// The version in service afterwards: a new one when something changed,
    /// else the same.
    pub version: u64,
    /// Module occurrences compiled and started anew (the others were kept).
    pub compiled: usize,
    /// Whether anything changed. A reload of the same configuration whose
    /// module files all have the same bytes keeps the version in service
    /// (file watchers often report one edit twice).
    pub changed: bool,
    /// The modules in service that could not be loaded (read, compiled or
    /// started), each saying where it is listed and why: their calls fail
    /// `unavailable` until a reload loads them
    /// ([`Orchestrator::unavailable`]).
    pub unavailable: Vec<LoadError>,
}

/// How to process a batch: `ProcessOptions::default()` (no trace — skip
/// reasons in it once traced — messages at once), then the builder methods. Fields may be added without breaking
/// callers.
///
/// ```
/// use rustmq_etl_orchestrator::ProcessOptions;
///
/// let options = ProcessOptions::default().trace(true).in_order(true);
/// assert!(options.trace && options.in_order && options.skip_reasons);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessOptions {
    /// Record each message's trace (off on the fast path).
    pub trace: bool,
    /// In a trace, say why each module not selected was not: which filters
    /// did not accept the topic, which rule did not hold (on by default).
    /// Off, [`SkipReason::NotSelected`](crate::SkipReason::NotSelected)'s
    /// text is empty: for a caller that counts what ran and what was skipped
    /// (`rustmq-etl run`'s summary), the texts would cost more than the rest
    /// of the trace.
    pub skip_reasons: bool,
    /// Run the batch's messages one after another in input order, each to
    /// its end before the next starts, on one engine thread. What a message
    /// meets that earlier ones left behind (a circuit breaker their failures
    /// opened) is then that of input order, the same on every run of the
    /// same input. Off, the batch is spread over the engine threads and a
    /// message waiting for a retry's delay lets the next ones run: faster,
    /// and which messages meet an open breaker depends on timing. A wave
    /// cut by `max_in_flight` stays in order: waves run one after another.
    pub in_order: bool,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            trace: false,
            skip_reasons: true,
            in_order: false,
        }
    }
}

impl ProcessOptions {
    /// Sets [`ProcessOptions::skip_reasons`].
    pub fn skip_reasons(mut self, skip_reasons: bool) -> Self {
        self.skip_reasons = skip_reasons;
        self
    }

    /// Sets [`ProcessOptions::trace`].
    pub fn trace(mut self, trace: bool) -> Self {
        self.trace = trace;
        self
    }

    /// Sets [`ProcessOptions::in_order`].
    pub fn in_order(mut self, in_order: bool) -> Self {
        self.in_order = in_order;
        self
    }
}

/// A batch [`Orchestrator::try_process_batch`] did not take: there is no
/// room for it among the messages in flight ([`Options::max_in_flight`]) now
/// (try again later, or use the waiting calls), or, if
/// [`Busy::never_fits`], there never will be: the batch is larger than the
/// limit ([`Orchestrator::process_batch`] runs such a batch in waves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
#[non_exhaustive]
pub struct Busy {
    /// The messages in the batch.
    pub batch: usize,
    /// The messages in flight as it was refused.
    pub in_flight: usize,
    /// Places given back that callers waiting for room held as it was
    /// refused: they come first (room goes to the callers in the order they
    /// asked), so a batch may be refused with fewer than `limit` in flight.
    pub held_for_waiting: usize,
    /// The most that may be in flight.
    pub limit: usize,
}

impl Busy {
    /// Whether the batch is larger than the limit: it is refused whatever is
    /// in flight.
    pub fn never_fits(&self) -> bool {
        self.batch > self.limit
    }

    fn describe(&self) -> String {
        if self.never_fits() {
            format!(
                "a batch of {} messages never fits: at most {} may be in flight at once \
                 (process_batch runs it in waves; or send it in pieces of at most {})",
                self.batch, self.limit, self.limit
            )
        } else {
            let waiting = match self.held_for_waiting {
                0 => String::new(),
                1 => " and callers waiting for room hold 1 place".to_owned(),
                held => format!(" and callers waiting for room hold {held} places"),
            };
            format!(
                "busy: {} of at most {} messages are in flight{waiting}, no room for {} more",
                self.in_flight, self.limit, self.batch
            )
        }
    }
}

/// The engine gave no answer for some of a call's messages: it stopped (its
/// threads ended), or it failed while running them — a panic outside what
/// the engine contains, which its log then reports (the pool's: `the host
/// panicked while running a task`). The call's first messages that the
/// engine did answer come back in `answered`; of the other `count`, some may
/// have run, and been counted in the metrics, but none of their results is
/// known. With the pool (`rustmq_etl_pool::Pool`), which cannot stop while
/// the orchestrator holds it, only such a failure brings it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the engine gave no answer for {count} messages: it stopped, or failed while running them \
     (see its log); some may have run"
)]
#[non_exhaustive]
pub struct EngineStopped {
    /// How many messages of the call have no answer: its last `count`, after
    /// those of `answered`.
    pub count: usize,
    /// The results of the call's first messages, in input order, as the
    /// call would have returned them: those of the engine batches (and, for
    /// a batch larger than `max_in_flight`, the waves) that ended before the
    /// first that gave no answer. A consumer may commit up to them, and send
    /// the other `count` messages again.
    pub answered: Vec<Processed>,
}

impl EngineStopped {
    /// A call answered for `answered`, its first messages, and not for the
    /// `count` after them (for a program that tests what it does when the
    /// engine stops).
    pub fn new(answered: Vec<Processed>, count: usize) -> Self {
        EngineStopped { count, answered }
    }

    /// The call of `total` messages stopped after `answered`.
    fn after(answered: Vec<Processed>, total: usize) -> Self {
        let count = total - answered.len();
        EngineStopped::new(answered, count)
    }
}

impl<E: Engine> Orchestrator<E> {
    /// Loads `config`'s modules from `source` into `engine` and puts the
    /// configuration in service. Blocks while modules compile. Fails only
    /// if the configuration does not plan: a module that cannot be read,
    /// compiled or started is unavailable instead (see
    /// [`Orchestrator::unavailable`]; nothing else could serve).
    pub fn new(
        engine: Arc<E>,
        config: &Config,
        source: impl ModuleSource + 'static,
        options: Options,
    ) -> Result<Self, ReloadError> {
        // Kept as they act, so that `options()` says what is in force.
        let max = options
            .max_in_flight
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let options = Options {
            max_in_flight: max,
            chunk: options.chunk.max(1),
            ..options
        };
        let keep = Keep {
            engine,
            source: Box::new(source),
            options: Arc::new(options),
            stats: Arc::new(Stats::new()),
            breakers: Mutex::default(),
            circuit_gauges: Mutex::default(),
        };
        let (snapshot, _) = build(&keep, config, 1, None, Modules::Read)
            .map_err(|errors| ReloadError { errors })?;
        to_recorder(|| metrics::gauge!("rustmq_etl_config_version").set(1.0));
        let orchestrator = Orchestrator {
            inner: Arc::new(Inner {
                keep,
                current: ArcSwap::from_pointee(snapshot),
                reloading: Mutex::new(()),
                versions: AtomicU64::new(1),
                in_flight: Arc::new(Semaphore::new(max)),
                admission: Arc::default(),
                waiting: AtomicUsize::new(0),
                last_reload: Mutex::new((true, unix_ms())),
                max_in_flight: max,
                seeds: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
                reloads: Default::default(),
                version_gauge: Mutex::new(()),
            }),
        };
        orchestrator.publish_last_reload();
        Ok(orchestrator)
    }

    /// Puts `config` in service: every message admitted from now on runs on
    /// it, whole (messages already admitted, running or waiting for an
    /// engine thread, run to their end on the configuration in service when
    /// they were admitted). Modules whose occurrence and bytes did not change
    /// are kept; others are read, compiled and started first, and if any cannot be, or
    /// the configuration cannot be planned, nothing changes. When neither the
    /// configuration nor any module's bytes changed, the version in service
    /// stays (`ReloadReport::changed` is false). Blocks while modules
    /// compile.
    pub fn reload(&self, config: &Config) -> Result<ReloadReport, ReloadError> {
        let one_at_a_time = lock(&self.inner.reloading);
        self.put_in_service(config, Modules::Read, &one_at_a_time)
    }

    /// [`Orchestrator::reload`]'s work, for a caller holding the reload lock
    /// (`_one_at_a_time`): a change made to the configuration in service is
    /// read and put in service under one lock, so that no other reload can
    /// come between and be undone.
    fn put_in_service(
        &self,
        config: &Config,
        modules: Modules,
        _one_at_a_time: &std::sync::MutexGuard<'_, ()>,
    ) -> Result<ReloadReport, ReloadError> {
        let previous = self.inner.current.load_full();
        let version = self.inner.versions.load(Ordering::Relaxed) + 1;
        let built = build(&self.inner.keep, config, version, Some(&previous), modules);
        let result = match built {
            // (The same occurrences are unavailable then: one loaded would
            // have been compiled, one lost refuses the reload. Why one does
            // not load may have changed: new bytes that fail otherwise make
            // a new version, so that its calls say the new reason.)
            Ok((snapshot, 0))
                if snapshot.config == previous.config
                    && snapshot.unavailable_errors() == previous.unavailable_errors() =>
            {
                Ok(ReloadReport {
                    version: previous.version,
                    compiled: 0,
                    changed: false,
                    unavailable: previous.unavailable_errors(),
                })
            }
            Ok((snapshot, compiled)) => {
                let unavailable = snapshot.unavailable_errors();
                self.inner.versions.store(version, Ordering::Relaxed);
                let _gauge = lock(&self.inner.version_gauge);
                self.inner.current.store(Arc::new(snapshot));
                to_recorder(|| metrics::gauge!("rustmq_etl_config_version").set(version as f64));
                Ok(ReloadReport {
                    version,
                    compiled,
                    changed: true,
                    unavailable,
                })
            }
            Err(errors) => Err(ReloadError { errors }),
        };
        let outcome = match &result {
            Ok(report) if report.changed => 0,
            Ok(_) => 1,
            Err(_) => 2,
        };
        self.count_reload(outcome, modules == Modules::Read);
        result
    }

    /// Counts a reload the embedding program rejected before it reached the
    /// orchestrator — a configuration file that did not load, say — among
    /// the rejected ones (`rustmq_etl_reloads_total{result="rejected"}`), so
    /// that one count holds every rejection (the series is published from
    /// this count, not added to). It takes its turn with reloads: asked while
    /// one runs, it is counted once that one has ended, and stands as the
    /// last reload (`rustmq_etl_config_last_reload_successful` 0), as it was
    /// asked last.
    pub fn reload_rejected(&self) {
        let _one_at_a_time = lock(&self.inner.reloading);
        self.count_reload(2, true);
    }

    /// Counts a reload's `outcome` (in [`RELOAD_RESULTS`]' order); `asked`:
    /// it was of a configuration or of the modules (not a switch), so it is
    /// the last reload asked for.
    fn count_reload(&self, outcome: usize, asked: bool) {
        let total = self.inner.reloads[outcome].fetch_add(1, Ordering::Relaxed) + 1;
        to_recorder(|| {
            metrics::counter!("rustmq_etl_reloads_total", "result" => RELOAD_RESULTS[outcome])
                .absolute(total)
        });
        if asked {
            let mut last = lock(&self.inner.last_reload);
            last.0 = outcome != 2;
            if last.0 {
                last.1 = unix_ms();
            }
            let last = *last;
            to_recorder(|| publish_last_reload(last));
        }
    }

    /// [`publish_last_reload`] of what is noted now.
    fn publish_last_reload(&self) {
        // Under the lock, as `count_reload` publishes: never an older value
        // after a newer one.
        let last = lock(&self.inner.last_reload);
        let now = *last;
        to_recorder(|| publish_last_reload(now));
        drop(last);
    }

    /// Switches pipeline `pipeline_id` on or off: a reload of the
    /// configuration in service with that one change, and only that: it
    /// reads no module file (the modules in service stay, loaded or
    /// unavailable, whatever is on the disk now: `reload_modules` puts
    /// changed files in service), so a switch needs nothing from the disk.
    /// The configuration is read under the reload lock: a reload running
    /// meanwhile is kept, not undone, and two switches made at once both
    /// hold.
    pub fn set_pipeline_enabled(
        &self,
        pipeline_id: &str,
        enabled: bool,
    ) -> Result<ReloadReport, ReloadError> {
        let one_at_a_time = lock(&self.inner.reloading);
        let changed = self
            .config()
            .with_pipeline_enabled(pipeline_id, enabled)
            .ok_or_else(|| ReloadError {
                errors: vec![LoadError::configuration(format!(
                    "no pipeline {pipeline_id:?}"
                ))],
            })?;
        self.put_in_service(&changed, Modules::Kept, &one_at_a_time)
    }

    /// Reads every module of the configuration in service again and puts
    /// changed ones in service (a module version swap). The configuration is
    /// read under the reload lock, as in
    /// [`Orchestrator::set_pipeline_enabled`].
    pub fn reload_modules(&self) -> Result<ReloadReport, ReloadError> {
        let one_at_a_time = lock(&self.inner.reloading);
        self.put_in_service(&self.config(), Modules::Read, &one_at_a_time)
    }

    /// The modules of the configuration in service that could not be loaded
    /// as it started — the file not read, not compiled or not started
    /// ([`LoadError::step`]) — each saying where it is listed and why (empty
    /// when every one loaded). Their calls fail `unavailable` (execution.md:
    /// a module "not loaded, not found") and are handled by their pipeline's
    /// error strategy; a reload that loads the module puts it in service.
    pub fn unavailable(&self) -> Vec<LoadError> {
        self.inner.current.load().unavailable_errors()
    }

    /// The configuration in service.
    pub fn config(&self) -> Config {
        self.inner.current.load().config.clone()
    }

    /// The version of the configuration in service (1 for the first, one
    /// more for every applied reload).
    pub fn config_version(&self) -> u64 {
        self.inner.current.load().version
    }

    /// The plan in service.
    pub fn plan(&self) -> Plan {
        self.inner.current.load().plan.clone()
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<E> {
        &self.inner.keep.engine
    }

    /// The options in force: as given, but `max_in_flight` and `chunk` as they
    /// act (0 counted as 1, a limit past what the semaphore grants at once as
    /// its most).
    pub fn options(&self) -> &Options {
        &self.inner.keep.options
    }

    /// Processes one message with the default [`ProcessOptions`] (no trace);
    /// for others, `process_batch(vec![message], options)`.
    pub async fn process(&self, message: Message) -> Result<Processed, EngineStopped> {
        let mut processed = self
            .process_batch(vec![message], ProcessOptions::default())
            .await?;
        Ok(processed.remove(0))
    }

    /// Processes `messages`, waiting while too many are in flight; the results
    /// are in input order, one per message.
    pub async fn process_batch(
        &self,
        messages: Vec<Message>,
        options: ProcessOptions,
    ) -> Result<Vec<Processed>, EngineStopped> {
        let max = self.inner.max_in_flight;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        if messages.len() <= max {
            // One wave, the usual case: the messages and their results are
            // handed on as they are, not copied into another vector.
            let permits = self.admit(messages.len()).await;
            let snapshot = self.inner.current.load_full();
            return self.run(messages, options, permits, snapshot).await;
        }
        let total = messages.len();
        let mut results = Vec::with_capacity(total);
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            let wave: Vec<Message> = messages.by_ref().take(max).collect();
            let permits = self.admit(wave.len()).await;
            let snapshot = self.inner.current.load_full();
            match self.run(wave, options, permits, snapshot).await {
                Ok(answered) => results.extend(answered),
                Err(stopped) => {
                    // The waves before, and what this one answered.
                    results.extend(stopped.answered);
                    return Err(EngineStopped::after(results, total));
                }
            }
        }
        Ok(results)
    }

    /// Waits for room for `count` more messages in flight (at most
    /// `max_in_flight`), counted as waiting meanwhile.
    async fn admit(&self, count: usize) -> Room {
        let semaphore = &self.inner.in_flight;
        // (Room free now is taken as it would be after a wait: none is free
        // while others wait for it.)
        if let Ok(permit) = semaphore.clone().try_acquire_many_owned(count as u32) {
            return Room::new(permit, &self.inner.admission);
        }
        struct Waiting<'a>(&'a AtomicUsize, usize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(self.1, Ordering::Relaxed);
            }
        }
        self.inner.waiting.fetch_add(count, Ordering::Relaxed);
        let _waiting = Waiting(&self.inner.waiting, count);
        let permit = semaphore
            .clone()
            .acquire_many_owned(count as u32)
            .await
            .expect("the in-flight semaphore is never closed");
        Room::new(permit, &self.inner.admission)
    }

    /// Messages waiting for room now: those of `process_batch` calls not
    /// yet admitted (of a batch larger than `max_in_flight`, the wave that
    /// asks; the waves after it are not counted until they ask).
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// Like [`Orchestrator::process_batch`], but answers [`Busy`] at once,
    /// running nothing, instead of waiting for room. The room is taken as it
    /// answers, on the configuration in service then; the batch runs when the
    /// future is first polled (the future owns what it needs: it may be
    /// spawned), and dropping the future unpolled gives the room back. Until
    /// then the room is held: a caller that waits for room itself (any other
    /// call) before polling or dropping it may wait for ever. On `Busy` the
    /// messages are dropped: to try again, keep a clone (a message's payload
    /// and key are shared, not copied).
    pub fn try_process_batch(
        &self,
        messages: Vec<Message>,
        options: ProcessOptions,
    ) -> Result<
        impl std::future::Future<Output = Result<Vec<Processed>, EngineStopped>> + Send + 'static,
        Busy,
    > {
        let max = self.inner.max_in_flight;
        let busy = || {
            let in_flight = self.in_flight();
            let free = self.inner.in_flight.available_permits();
            Busy {
                batch: messages.len(),
                in_flight,
                // (Places just taken and not yet counted look held too:
                // never more than the callers waiting ask for.)
                held_for_waiting: max.saturating_sub(in_flight + free).min(self.waiting()),
                limit: max,
            }
        };
        if messages.len() > max {
            return Err(busy());
        }
        let permits = match self
            .inner
            .in_flight
            .clone()
            .try_acquire_many_owned(messages.len() as u32)
        {
            Ok(permits) => Room::new(permits, &self.inner.admission),
            Err(TryAcquireError::NoPermits) | Err(TryAcquireError::Closed) => return Err(busy()),
        };
        // (On the configuration in service as it is admitted, not as it is
        // first polled.)
        let snapshot = self.inner.current.load_full();
        let this = self.clone();
        Ok(async move { this.run(messages, options, permits, snapshot).await })
    }

    /// [`Orchestrator::process_batch`] for callers without an async runtime:
    /// blocks this thread until the batch is done.
    pub fn process_batch_blocking(
        &self,
        messages: Vec<Message>,
        options: ProcessOptions,
    ) -> Result<Vec<Processed>, EngineStopped> {
        // Unconstrained: called (against its documentation) from a tokio
        // task, each wait spends the task's budget, and once it is spent
        // tokio puts off every wake-up until the task yields, which it never
        // does while blocked here: the call would never end.
        pollster::block_on(tokio::task::unconstrained(
            self.process_batch(messages, options),
        ))
    }

    /// Runs one admitted wave on `snapshot`, the configuration in service as
    /// it was admitted: splits it into batches, one engine thread each (one
    /// batch if it is to run in order), and gathers the answers in order.
    async fn run(
        &self,
        messages: Vec<Message>,
        options: ProcessOptions,
        mut permits: Room,
        snapshot: Arc<Snapshot<E>>,
    ) -> Result<Vec<Processed>, EngineStopped> {
        let engine = &self.inner.keep.engine;
        let count = messages.len();
        let threads = engine.threads().max(1);
        let chunk = if options.in_order {
            count
        } else {
            self.inner
                .keep
                .options
                .chunk
                .max(1)
                .min(count.div_ceil(threads).max(1))
        };
        let mut runs = self.runs(&snapshot, messages, options);
        let mut answers = Vec::new();
        let mut refused = false;
        while runs.peek().is_some() {
            let runs: Vec<Run> = runs.by_ref().take(chunk).collect();
            let (reply, answer) = oneshot::channel();
            // The batch's messages' permits go with it, given back when the
            // engine is done with it (or drops it unrun), not when this
            // future is: a caller that gives up does not stop messages
            // already running, and they stay counted as in flight.
            let permits = Some(
                permits
                    .split(runs.len())
                    .expect("a wave's batches together hold its permits"),
            );
            let batch = Batch {
                snapshot: snapshot.clone(),
                runs,
                reply: Some(reply),
                permits,
                in_order: options.in_order,
            };
            let task: Box<dyn Task<E::Runner>> = Box::new(batch);
            if engine.submit(task).is_err() {
                // Refused (and dropped, its room given back): the batches
                // taken before it are waited for, so that their answers
                // come back; the messages after it, and their room, go.
                refused = true;
                break;
            }
            answers.push(answer);
        }
        debug_assert!(
            refused || permits.places() == 0,
            "every place went with a batch"
        );
        // (After a refusal, the room of the messages not sent goes now, not
        // once the batches sent have answered.)
        drop(permits);
        if answers.len() == 1 && !refused {
            // One batch (a single message, a wave on one engine thread): its
            // answers are the results, not copied into another vector.
            return answers
                .swap_remove(0)
                .await
                .map_err(|_| EngineStopped::after(Vec::new(), count));
        }
        let mut results = Vec::with_capacity(count);
        for answer in answers {
            match answer.await {
                Ok(answered) => results.extend(answered),
                Err(_) => return Err(EngineStopped::after(results, count)),
            }
        }
        if refused {
            return Err(EngineStopped::after(results, count));
        }
        Ok(results)
    }

    /// The runs of a wave's messages, submitted now, each with its jitter
    /// seed.
    fn runs(
        &self,
        snapshot: &Snapshot<E>,
        messages: Vec<Message>,
        options: ProcessOptions,
    ) -> std::iter::Peekable<impl Iterator<Item = Run> + use<'_, E>> {
        let submitted = Instant::now();
        // The wave's seeds, one apart each: one shared atomic step per wave,
        // not per message, for callers on several threads.
        const SEED_STEP: u64 = 0x9e37_79b9;
        let mut seed = self.inner.seeds.fetch_add(
            SEED_STEP.wrapping_mul(messages.len() as u64),
            Ordering::Relaxed,
        );
        let modules = snapshot.plan.module_count();
        messages
            .into_iter()
            .map(move |m| {
                seed = seed.wrapping_add(SEED_STEP);
                Run::new(
                    m,
                    modules,
                    options.trace,
                    options.skip_reasons,
                    seed,
                    submitted,
                )
            })
            .peekable()
    }

    /// A runner of the calling thread's own, on which
    /// [`OnThisThread::process_batch`] runs messages without handing them to
    /// the engine's threads: for a caller that owns a thread (a consumer's
    /// poll loop, say) and would rather spend it than wait on it. `Err` if
    /// the engine gives none ([`Engine::caller_runner`]; the wasmer pool
    /// gives `PoolConfig::caller_threads` at most, none by default).
    ///
    /// A consumer's loop, one `OnThisThread` for the thread's life:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use rustmq_etl_orchestrator::{
    ///     Config, DirectorySource, Disposition, Format, Message, Options, Orchestrator,
    ///     ProcessOptions,
    /// };
    /// use rustmq_etl_pool::{Pool, PoolConfig};
    ///
    /// # let modules = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/modules");
    /// let yaml = "pipeline_id: shout\nstages: [{priority: 0, modules: [{module_id: legacy-uppercase}]}]";
    /// let config = Config::from_text(yaml, Format::Yaml, None)?.config;
    /// // Room for one consumer thread's runner beside the pool's workers.
    /// let engine = Arc::new(Pool::new(PoolConfig { caller_threads: 1, ..PoolConfig::default() })?);
    /// let etl = Orchestrator::new(engine, &config, DirectorySource::new(modules), Options::default())?;
    /// let consumer = std::thread::spawn(move || -> Result<Vec<Message>, String> {
    ///     let mut here = etl.on_this_thread().map_err(|e| e.to_string())?;
    ///     let mut produced = Vec::new();
    ///     for polled in [vec![Message::new("orders", "two pears")], vec![Message::new("orders", "a fig")]] {
    ///         for result in here.process_batch(polled, ProcessOptions::default()) {
    ///             if let Disposition::Delivered(message) = result.disposition {
    ///                 produced.push(message); // produce, then commit the offsets
    ///             }
    ///         }
    ///     }
    ///     Ok(produced)
    /// });
    /// let produced = consumer.join().unwrap()?;
    /// assert_eq!(produced[0].payload, "TWO PEARS");
    /// assert_eq!(produced[1].payload, "A FIG");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_this_thread(&self) -> Result<OnThisThread<E>, NoRunner> {
        Ok(OnThisThread {
            runner: self.inner.keep.engine.caller_runner()?,
            orchestrator: self.clone(),
            prepared: 0,
        })
    }

    /// Publishes every metric now (the orchestrator's and the engine's) to the
    /// `metrics` recorder installed now: an exporter calls it before it
    /// renders (or a program every few seconds). Counters also go out on their
    /// own every 100 ms while messages flow; the histograms' samples (times of
    /// modules, stages and selection) only here, each sample once.
    pub fn publish_metrics(&self) {
        Stats::describe();
        // What is said of the configuration in service is said of one
        // version, under the lock a reload swaps it under: two publishes at
        // once (a scrape and a timer) cannot interleave with a swap and leave
        // the older version's gauges last (an occurrence just removed read
        // open or unavailable again until the next publish).
        let gauge = lock(&self.inner.version_gauge);
        let snapshot = self.inner.current.load();
        metrics::gauge!("rustmq_etl_config_version").set(snapshot.version as f64);
        // Module occurrences in service whose calls fail `unavailable`.
        metrics::gauge!("rustmq_etl_modules_unavailable").set(snapshot.unavailable.len() as f64);
        for (result, count) in RELOAD_RESULTS.iter().zip(&self.inner.reloads) {
            metrics::counter!("rustmq_etl_reloads_total", "result" => *result)
                .absolute(count.load(Ordering::Relaxed));
        }
        self.publish_last_reload();
        metrics::gauge!("rustmq_etl_messages_waiting").set(self.waiting() as f64);
        let occurrences = snapshot.plan.occurrences();
        let now = Instant::now();
        for ((spec, breaker), module) in occurrences
            .iter()
            .zip(&snapshot.breakers)
            .zip(&snapshot.modules)
        {
            let labels = spec.labels();
            metrics::gauge!("rustmq_etl_circuit_state", &labels)
                .set(f64::from(breaker.state_at(now).as_number()));
            metrics::gauge!("rustmq_etl_module_unavailable", &labels).set(if module.is_err() {
                1.0
            } else {
                0.0
            });
        }
        // An occurrence taken out of service (a reload changed its settings or
        // removed it) no longer has a breaker that acts: its gauges read 0,
        // not the last state it had (an open breaker would alert for ever).
        let mut gauged = lock(&self.inner.keep.circuit_gauges);
        let in_service: HashSet<&ModuleSpec> = occurrences.iter().collect();
        gauged.retain(|spec| {
            let keep = in_service.contains(spec);
            if !keep {
                let labels = spec.labels();
                metrics::gauge!("rustmq_etl_circuit_state", &labels).set(0.0);
                metrics::gauge!("rustmq_etl_module_unavailable", &labels).set(0.0);
            }
            keep
        });
        gauged.extend(occurrences.iter().cloned());
        drop(gauged);
        drop(gauge);
        snapshot.stats.publish(true);
        metrics::gauge!("rustmq_etl_messages_in_flight").set(self.in_flight() as f64);
        self.inner.keep.engine.publish_metrics();
    }

    /// Waits until no message is in flight ([`Orchestrator::in_flight`]
    /// reads 0): every message admitted has been run to its end (or, its
    /// caller gone before it started, dropped unrun). It takes no room:
    /// messages sent while it waits are admitted as usual and waited for too
    /// once admitted (a caller still waiting for room is not waited for),
    /// so call it once the program has stopped sending — every
    /// `process_batch` returned or dropped (a batch larger than
    /// `max_in_flight` is admitted wave by wave: a drain may end between its
    /// waves), and every `try_process_batch` future polled to its end or
    /// dropped (one not polled holds its room: the drain waits for it) — then
    /// drop the engine, which has nothing left to finish. Dropping the future
    /// gives up the wait.
    pub async fn drain(&self) {
        loop {
            // Registered before looking, so that room given back between the
            // look and the wait is not missed.
            let given_back = self.inner.admission.given_back.notified();
            let mut given_back = std::pin::pin!(given_back);
            given_back.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            given_back.await;
        }
    }

    /// [`Orchestrator::drain`] for callers without an async runtime: blocks
    /// this thread.
    pub fn drain_blocking(&self) {
        // (Unconstrained, as the other blocking calls.)
        pollster::block_on(tokio::task::unconstrained(self.drain()));
    }

    /// Messages in flight now: admitted, and their engine batch not done
    /// (`Options::max_in_flight` at most, but for an instant: places given
    /// back are counted until just after a waiting caller may have taken
    /// them). Callers waiting for room are not
    /// counted, although room given back goes to them first (see
    /// [`Orchestrator::process_batch`]).
    pub fn in_flight(&self) -> usize {
        self.inner.admission.admitted.load(Ordering::Relaxed)
    }

    /// Every module occurrence in service, in the plan's order of
    /// occurrences: its `module_id` and settings (`ModuleSettings::label`
    /// names it as the metrics do), its circuit breaker's state and the stages
    /// that use it, all from one configuration version.
    pub fn occurrences(&self) -> Vec<Occurrence> {
        occurrences(&self.inner.current.load())
    }

    /// The configuration in service, its version and its module occurrences,
    /// all of one version (a reload may come between separate calls of
    /// [`Orchestrator::config`], [`Orchestrator::config_version`] and
    /// [`Orchestrator::occurrences`]).
    pub fn in_service(&self) -> InService {
        let snapshot = self.inner.current.load();
        InService {
            version: snapshot.version,
            config: snapshot.config.clone(),
            occurrences: occurrences(&snapshot),
        }
    }
}

/// The occurrences of `snapshot`'s plan ([`Orchestrator::occurrences`]).
fn occurrences<E: Engine>(snapshot: &Snapshot<E>) -> Vec<Occurrence> {
    let plan = &snapshot.plan;
    let now = Instant::now();
    let mut occurrences: Vec<Occurrence> = plan
        .occurrences()
        .iter()
        .zip(&snapshot.breakers)
        .zip(&snapshot.modules)
        .map(|((spec, breaker), module)| Occurrence {
            spec: spec.clone(),
            circuit: breaker.state_at(now),
            used_in: Vec::new(),
            unavailable: module.as_ref().err().map(|why| why.to_string()),
        })
        .collect();
    for pipeline in plan.pipelines() {
        for stage in &pipeline.stages {
            for module in &stage.modules {
                occurrences[module.occurrence]
                    .used_in
                    .push((pipeline.config.pipeline_id.clone(), stage.priority));
            }
        }
    }
    occurrences
}

/// An [`Orchestrator`] that runs messages on the thread that holds it, with
/// a runner of the thread's own ([`Orchestrator::on_this_thread`]): a batch
/// is not handed over, so neither side waits for the other to wake, and the
/// messages the thread made are read from its own caches.
///
/// Everything else is the orchestrator's: the configuration in service
/// (each batch runs on the one in service as it starts), the room for
/// messages in flight, which its batches take and wait for as
/// [`Orchestrator::process_batch`]'s do, the breakers, the metrics and
/// [`Orchestrator::drain`]. Its runner holds warm instances of the modules
/// it ran until it is dropped, and lets go of those past their time when
/// tidied ([`OnThisThread::tidy`]: before each batch, or when its holder
/// calls it). The thread runs the modules, so it must be one that may block:
/// not an async task's (tokio's `spawn_blocking` and `block_in_place` are
/// fine). A batch begun runs to its end: unlike a `process_batch` future, it
/// cannot be given up.
pub struct OnThisThread<E: Engine> {
    orchestrator: Orchestrator<E>,
    runner: E::Runner,
    /// The snapshot whose modules the runner was readied for (0: none).
    prepared: u64,
}

impl<E: Engine> std::fmt::Debug for OnThisThread<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnThisThread").finish_non_exhaustive()
    }
}

impl<E: Engine> OnThisThread<E> {
    /// Processes `messages` on this thread, as
    /// [`Orchestrator::process_batch`] does on the engine's, and returns
    /// when they are done: the results are in input order, one per message.
    /// This thread waits first for room, while too many messages are in
    /// flight, and then, whenever every message of the batch not done waits
    /// (a retry's delay, a module that may not start another instance yet),
    /// until the first may go on.
    pub fn process_batch(
        &mut self,
        messages: Vec<Message>,
        options: ProcessOptions,
    ) -> Vec<Processed> {
        let max = self.orchestrator.inner.max_in_flight;
        if messages.len() <= max {
            return self.run(messages, options);
        }
        let mut results = Vec::with_capacity(messages.len());
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            let wave: Vec<Message> = messages.by_ref().take(max).collect();
            results.extend(self.run(wave, options));
        }
        results
    }

    /// The orchestrator it runs for.
    pub fn orchestrator(&self) -> &Orchestrator<E> {
        &self.orchestrator
    }

    /// Lets the runner drop what it keeps past its time — instances idle
    /// past their module's `cache_ttl_seconds`, those of module versions a
    /// reload replaced — if its engine's cleaning interval has gone by (the
    /// wasmer pool's `PoolConfig::cleaner_interval`, 1 s by default).
    /// `process_batch` does this before each batch; a thread that may go
    /// without batches for a while (a consumer whose poll came back empty)
    /// calls it then, or its instances stay until it is dropped.
    pub fn tidy(&mut self) {
        // Contained: the wasmer pool publishes its statistics as it tidies,
        // and the embedding program's metrics recorder may panic.
        if let Err(text) = contain(|| self.runner.tidy()) {
            log::error!(
                "rustmq-etl: tidying the runner of a caller's thread panicked (in the metrics \
                 recorder?): {text}; it goes on"
            );
        }
    }

    /// Runs one wave, admitted here, as one batch.
    fn run(&mut self, messages: Vec<Message>, options: ProcessOptions) -> Vec<Processed> {
        if messages.is_empty() {
            return Vec::new();
        }
        self.tidy();
        let orchestrator = &self.orchestrator;
        // Readied before the batch takes room (instances started meanwhile
        // hold up no other caller), and again after if a reload came between.
        // (The snapshot is only borrowed here: no reference count taken.)
        prepare(
            &mut self.runner,
            &mut self.prepared,
            &orchestrator.inner.current.load(),
        );
        // Unconstrained: called (against its documentation) from a tokio
        // task whose budget is spent, the wait would never end.
        let permits = pollster::block_on(tokio::task::unconstrained(
            orchestrator.admit(messages.len()),
        ));
        let snapshot = orchestrator.inner.current.load_full();
        prepare(&mut self.runner, &mut self.prepared, &snapshot);
        let runs = orchestrator.runs(&snapshot, messages, options).collect();
        let (reply, mut answer) = oneshot::channel();
        let mut batch = Batch {
            snapshot,
            runs,
            reply: Some(reply),
            permits: Some(permits),
            in_order: options.in_order,
        };
        while let Step::WaitUntil(at) = batch.run(&mut self.runner) {
            self.tidy();
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
        }
        answer
            .try_recv()
            .expect("a batch run to its end has answered")
    }
}

/// Readies `runner` for `snapshot`'s modules (disabled pipelines' too), as
/// the engine readied its own threads when it loaded them (warm-up
/// instances), unless `prepared` says it was already.
fn prepare<E: Engine>(runner: &mut E::Runner, prepared: &mut u64, snapshot: &Snapshot<E>) {
    if *prepared == snapshot.id {
        return;
    }
    for loaded in snapshot.modules.iter().flatten() {
        if let Err(text) = contain(|| runner.prepare(&loaded.module)) {
            log::error!("rustmq-etl: readying a caller's thread for a module panicked: {text}");
        }
    }
    *prepared = snapshot.id;
}

/// What is in service, of one version ([`Orchestrator::in_service`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InService {
    /// The configuration's version.
    pub version: u64,
    /// The configuration.
    pub config: Config,
    /// Its module occurrences.
    pub occurrences: Vec<Occurrence>,
}

/// A module occurrence in service ([`Orchestrator::occurrences`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Occurrence {
    /// Its `module_id` and settings.
    pub spec: ModuleSpec,
    /// Its circuit breaker's state (half-open once an open one's cool-down
    /// is over: its next call is the probe).
    pub circuit: CircuitState,
    /// The stages that use it: pipeline id and priority, in the plan's order
    /// (a stage that lists it twice, twice).
    pub used_in: Vec<(String, u32)>,
    /// Why its calls fail `unavailable`, if they do (it could not be read,
    /// compiled or started).
    pub unavailable: Option<String>,
}

/// Runs `f`, turning a panic into its text.
pub(crate) fn contain<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned())
    })
}

/// `mutex` locked, whether or not a thread panicked holding it (what it
/// guards stays consistent: each holder writes whole values).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs `publish`, which hands values to the embedding program's metrics
/// recorder, outside any call's answer: a panic there is contained and
/// logged, so that a reload applied is answered as applied.
fn to_recorder(publish: impl FnOnce()) {
    if let Err(panic) = contain(publish) {
        log::error!(
            "rustmq-etl: publishing the metrics panicked (in the metrics recorder?): {panic}; \
             the metrics may be behind"
        );
    }
}

/// `rustmq_etl_config_last_reload_successful` and
/// `rustmq_etl_config_last_reload_success_timestamp_seconds` of `(successful,
/// when in Unix milliseconds)`: set by the holder of the lock they are kept
/// under.
fn publish_last_reload((successful, at_ms): (bool, u64)) {
    metrics::gauge!("rustmq_etl_config_last_reload_successful").set(if successful {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("rustmq_etl_config_last_reload_success_timestamp_seconds")
        .set(at_ms as f64 / 1000.0);
}
