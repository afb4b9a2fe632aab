//! Running messages through a configuration: execution.md, step by step.
//!
//! A [`Run`] is one message's journey as a resumable state machine: it
//! advances module by module through the runner of the engine thread it is
//! on, and when it must wait (a retry's backoff, a module that cannot start
//! another instance yet) it says until when and keeps its place. A [`Batch`]
//! is the engine task that runs a slice of a caller's messages, in order, and
//! answers when the last of them has ended.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustmq_etl_config::ErrorHandlingStrategy;
use rustmq_etl_core::{
    Bytes, CallError, CallReport, CallRequest, Edit, Engine, ErrorKind, Headers, Message,
    ModuleRunner, Outcome, Step, Task,
};
use smallvec::SmallVec;
use tokio::sync::oneshot;

use crate::breaker::{CircuitState, Permit};
use crate::dead_letter::DeadLetterCause;
use crate::orchestrator::contain;
use crate::plan::{Plan, PlanScratch, PlannedModule, PlannedPipeline, PlannedStage, Reads};
use crate::result::{
    Disposition, FailureAction, Processed, RanOutcome, SkipReason, Trace, TraceEntry, TraceEvent,
};
use crate::snapshot::Snapshot;
use crate::stats::{CallResult, PipelineResult, Tally};

/// A set of small numbers (module positions), kept inline up to 128.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bits {
    Inline(u128),
    Heap(Vec<u64>),
}

impl Bits {
    fn new(len: usize) -> Bits {
        if len <= 128 {
            Bits::Inline(0)
        } else {
            Bits::Heap(vec![0; len.div_ceil(64)])
        }
    }

    #[inline]
    fn get(&self, i: usize) -> bool {
        match self {
            Bits::Inline(bits) => i < 128 && (*bits >> (i & 64)) as u64 >> (i & 63) & 1 == 1,
            Bits::Heap(words) => words.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1),
        }
    }

    /// Whether any number in `range` is in the set.
    fn any_in(&self, range: Range<usize>) -> bool {
        match self {
            Bits::Inline(bits) => {
                let (start, end) = (range.start.min(128), range.end.min(128));
                if start >= end {
                    return false;
                }
                let mask = (u128::MAX >> (128 - (end - start))) << start;
                bits & mask != 0
            }
            Bits::Heap(_) => range.into_iter().any(|i| self.get(i)),
        }
    }

    /// The numbers in the set, ascending.
    fn iter(&self) -> Ones<'_> {
        Ones {
            rest: self.word(0),
            bits: self,
            word: 0,
        }
    }

    /// Word `w` of the set (numbers `64 * w..64 * (w + 1)`); 0 past the end.
    fn word(&self, w: usize) -> u64 {
        match self {
            Bits::Inline(bits) if w < 2 => (bits >> (64 * w)) as u64,
            Bits::Inline(_) => 0,
            Bits::Heap(words) => words.get(w).copied().unwrap_or(0),
        }
    }

    fn words(&self) -> usize {
        match self {
            Bits::Inline(_) => 2,
            Bits::Heap(words) => words.len(),
        }
    }

    /// Becomes a copy of `other` (in place when both are of one length).
    #[inline]
    fn copy_from(&mut self, other: &Bits) {
        match (&mut *self, other) {
            (Bits::Inline(bits), Bits::Inline(other)) => *bits = *other,
            (Bits::Heap(words), Bits::Heap(other)) if words.len() == other.len() => {
                words.copy_from_slice(other)
            }
            (this, other) => *this = other.clone(),
        }
    }

    /// Becomes `a` and `b` (all three of one length).
    fn set_and(&mut self, a: &Bits, b: &Bits) {
        match (self, a, b) {
            (Bits::Inline(bits), Bits::Inline(a), Bits::Inline(b)) => *bits = a & b,
            (Bits::Heap(words), Bits::Heap(a), Bits::Heap(b)) => {
                for ((word, a), b) in words.iter_mut().zip(a).zip(b) {
                    *word = a & b;
                }
            }
            _ => unreachable!("sets of one length have one representation"),
        }
    }

    fn set(&mut self, i: usize, on: bool) {
        match self {
            Bits::Inline(bits) => {
                if on {
                    *bits |= 1 << i;
                } else {
                    *bits &= !(1 << i);
                }
            }
            Bits::Heap(words) => {
                let (word, bit) = (i / 64, i % 64);
                if on {
                    words[word] |= 1 << bit;
                } else {
                    words[word] &= !(1 << bit);
                }
            }
        }
    }
}

/// An engine thread's selection scratch space for one plan, and the
/// filters' verdict for the last topic it evaluated: filters read the topic
/// alone, and the messages of a batch mostly share theirs, so a message on
/// the same topic as the one before takes the verdict as it is (a comparison
/// and a copy, however many modules the plan has).
pub(crate) struct Scratch {
    plan: PlanScratch,
    last_topic: String,
    /// The verdict for `last_topic`, if `known`.
    last_filters: Bits,
    /// Set only once `last_topic` and `last_filters` agree (an evaluation
    /// that panicked leaves it unset).
    known: bool,
}

impl Scratch {
    pub(crate) fn new(plan: &Plan) -> Scratch {
        Scratch {
            plan: plan.create_scratch(),
            last_topic: String::new(),
            last_filters: Bits::new(plan.module_count()),
            known: false,
        }
    }

    /// Sets `filters` to the plan's filters' verdict on `topic`.
    fn select_filters(&mut self, plan: &Plan, topic: &str, filters: &mut Bits) {
        if self.known && self.last_topic == topic {
            filters.copy_from(&self.last_filters);
            debug_assert_eq!(
                *filters,
                {
                    let mut fresh = filters.clone();
                    plan.select_filters(topic, &mut self.plan, |i, on| fresh.set(i, on));
                    fresh
                },
                "the verdict kept for {topic:?} is the plan's"
            );
            return;
        }
        self.known = false;
        plan.select_filters(topic, &mut self.plan, |i, on| filters.set(i, on));
        self.last_filters.copy_from(filters);
        self.last_topic.clear();
        self.last_topic.push_str(topic);
        self.known = true;
    }
}

/// The numbers in a [`Bits`], ascending.
struct Ones<'b> {
    bits: &'b Bits,
    /// The word being read, and its bits not yet listed.
    word: usize,
    rest: u64,
}

impl Iterator for Ones<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.rest == 0 {
            self.word += 1;
            if self.word >= self.bits.words() {
                return None;
            }
            self.rest = self.bits.word(self.word);
        }
        let bit = self.rest.trailing_zeros() as usize;
        self.rest &= self.rest - 1;
        Some(self.word * 64 + bit)
    }
}

/// Where a message stands: which pipeline, stage and module.
#[derive(Debug, Default)]
struct Place {
    pipeline: usize,
    /// `None`: the pipeline has not started.
    stage: Option<usize>,
    /// The module's position in its stage; `None`: the stage has not started.
    module: Option<usize>,
}

/// The fields of the message as it entered the pipeline that an edit since
/// changed: the message as it entered is the current one with these put back
/// (an undo log: a message nothing edits costs nothing to keep).
#[derive(Debug, Default)]
struct Saved {
    topic: Option<String>,
    key: Option<Option<Bytes>>,
    headers: Option<SavedHeaders>,
    payload: Option<Bytes>,
    timestamp: Option<Option<i64>>,
}

/// What gives back the headers as they entered: their count, or a copy.
///
/// `Prefix` relies on the first headers staying the entry's, which
/// `Message::apply` keeps for edits of other names; it could break only if
/// applying an answer panicked halfway (the bulk header path takes the
/// vector apart), which nothing but a failed allocation, an abort, could make
/// it do.
#[derive(Debug)]
enum SavedHeaders {
    /// The entry's headers are still the first this many, unchanged: every
    /// header edit so far named a header the entry did not have, so it only
    /// added headers after them or changed or removed those it added (the
    /// usual case, a module adding a header of its own, copies nothing).
    Prefix(usize),
    /// The entry's headers, copied before an edit that changes them.
    Copy(Headers),
}

/// Up to this many header edits in one answer, each name is looked for among
/// the entry's headers; more, and the entry's headers are copied, so that the
/// host's work for an answer stays linear in the headers and the edits
/// (an untrusted module may answer thousands of edits).
const FEW_HEADER_EDITS: usize = 8;

impl SavedHeaders {
    /// Keeps what `headers` must be given back as, before an answer's header
    /// edits, naming `names` (at least one), are applied to them. All of an
    /// answer's edits are checked against the headers before any is applied;
    /// the entry's first headers are the same then as after any edit of
    /// another name, so the order of the answer's edits does not matter.
    fn before_edits<'e>(
        saved: &mut Option<SavedHeaders>,
        headers: &Headers,
        mut names: impl Iterator<Item = &'e str> + Clone,
    ) {
        let entry = match saved {
            None => headers.len(),
            Some(SavedHeaders::Prefix(entry)) => *entry,
            Some(SavedHeaders::Copy(_)) => return,
        };
        let own = headers.iter().take(entry);
        let many = names.clone().nth(FEW_HEADER_EDITS).is_some();
        let changes_own = many || names.any(|name| own.clone().any(|(n, _)| n == name));
        *saved = Some(if changes_own {
            SavedHeaders::Copy(own.collect())
        } else {
            SavedHeaders::Prefix(entry)
        });
    }

    /// `headers` as they entered.
    fn restore(self, headers: &mut Headers) {
        match self {
            SavedHeaders::Prefix(entry) => headers.truncate(entry),
            SavedHeaders::Copy(entry) => *headers = entry,
        }
    }
}

/// What a pipeline keeps while a message is in it.
#[derive(Debug, Default)]
struct InPipeline {
    /// Whether a failure may need the message as it entered.
    keeps_entry: bool,
    /// Made by the first edit that must save something: a run nothing edits
    /// carries one pointer, not the log.
    saved: Option<Box<Saved>>,
    deadline: Option<Instant>,
    /// When the message entered it (the clock read then).
    started: Option<Instant>,
    /// Whether a stage of it selected any module for the message: only then
    /// is the pipeline's time recorded (a pipeline that runs nothing is
    /// passed over or walked through depending on what came before; its
    /// near-zero time is no sample either way).
    selected: bool,
}

/// What a stage keeps while a message is in it.
#[derive(Debug)]
struct InStage {
    /// The stage's time: how far the run's clock moved since the stage
    /// started, summed as it moves (a call's `ran` is the distance its end
    /// moved the clock), so that no instants are subtracted.
    elapsed: Duration,
    /// The clock as the stage started: only for debug builds' check of
    /// `elapsed`.
    #[cfg(debug_assertions)]
    started: Instant,
    deadline: Option<Instant>,
    /// Any module selected. Which ones is [`Selection::runs`]: selection
    /// changes only as a stage starts.
    any: bool,
    /// A parallel stage: every module runs on the message as it stands (the
    /// edits wait until the stage ends), each module's edits in declaration
    /// order, and whether one dropped the message.
    parallel: bool,
    edits: StageEdits,
    dropped: bool,
    /// A parallel stage's first failure (in declaration order) that ends the
    /// message's pipeline: acted on once every module of the stage has ended.
    ending: Option<Box<Ending>>,
}

/// A failure in a parallel stage that ends the pipeline, kept until the
/// stage's modules have all ended.
#[derive(Debug)]
struct Ending {
    action: FailureAction,
    /// The failed module's position in its stage.
    position: usize,
    error: CallError,
    attempts: u32,
}

/// A parallel stage's edits, each module's in declaration order: the first
/// module's kept inline, so that a stage in which one module edits (the
/// usual case) allocates no list.
#[derive(Debug, Default)]
struct StageEdits {
    first: Option<Vec<Edit>>,
    rest: Vec<Vec<Edit>>,
}

impl StageEdits {
    fn push(&mut self, edits: Vec<Edit>) {
        if self.first.is_none() {
            self.first = Some(edits);
        } else {
            self.rest.push(edits);
        }
    }

    #[inline]
    fn clear(&mut self) {
        if self.first.is_some() {
            self.first = None;
            self.rest.clear();
        }
    }

    /// The edits so far, in the order pushed.
    fn iter(&self) -> impl Iterator<Item = &[Edit]> + Clone {
        self.first.iter().chain(&self.rest).map(Vec::as_slice)
    }

    /// The edits, in the order pushed; empties the list.
    fn take(&mut self) -> impl Iterator<Item = Vec<Edit>> {
        let (first, rest) = (self.first.take(), std::mem::take(&mut self.rest));
        first.into_iter().chain(rest)
    }
}

/// The current module's retries.
#[derive(Debug, Default)]
struct InModule {
    attempts: u32,
    time: Duration,
    /// Its circuit breaker as its last attempt met it (none: not called).
    circuit: Option<CircuitState>,
    /// A probe call let through and not yet reported to the breaker: a host
    /// panic in between gives it back, or the breaker would wait for it for
    /// ever.
    probe_out: bool,
    /// Waiting until then before the next attempt.
    retry_at: Option<Instant>,
    /// Its calls are counted for the message ([`Run::count_calls`]).
    counted: bool,
    /// A call is under way: a host failure during it counts it.
    calling: bool,
}

/// Which modules run (by plan index), as of the message's last change that
/// matters.
#[derive(Debug)]
struct Selection {
    filters: Bits,
    /// The filters' verdict before a topic change, while only the topic
    /// changed (see `Run::start_stage`).
    before: Bits,
    rules: Bits,
    /// Both: the modules that run.
    runs: Bits,
    /// The filters (topic) or the rules (other parts) must be evaluated again.
    stale_filters: bool,
    stale_rules: bool,
}

/// How a journey ended; the message it ended with (delivered or the dead
/// letter) stays in [`Run::message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Delivered,
    Dropped,
    DeadLettered,
    /// Never started: its caller was gone by then (see [`Batch`]).
    Abandoned,
}

/// One message's journey.
#[derive(Debug)]
pub(crate) struct Run {
    /// The message as it stands; once the journey has ended, what it ended
    /// with (see [`End`]).
    message: Message,
    place: Place,
    pipeline: InPipeline,
    stage: InStage,
    module: InModule,
    selection: Selection,
    /// The latest reading of the clock the run knows of (see [`Run::step`]):
    /// deadlines start from it.
    clock: Instant,
    trace: Option<Box<Trace>>,
    /// Whether the trace says why a module was not selected
    /// ([`crate::ProcessOptions::skip_reasons`]).
    skip_reasons: bool,
    /// The failure of the current module's attempt before, once it is to be
    /// retried: if the retry then fails otherwise (the breaker opened
    /// meanwhile, the stage's or the pipeline's time ran out), its text quotes
    /// this one, the cause. Kept here, not with the module's retries, so that
    /// moving from module to module costs nothing more.
    retried: Option<Box<CallError>>,
    /// The calls made for this message so far of each occurrence listed more
    /// than once (see [`PlannedModule::listed_again`]), by occurrence: what a
    /// dead letter's `etl-dlq-attempts` counts ("how many times M was called
    /// for this message"). Two kept inline: a message allocates nothing for
    /// the usual repeat, a module shared by two pipelines.
    calls: SmallVec<[(usize, u32); 2]>,
    done: Option<End>,
    /// A cheap random state for jitter.
    seed: u64,
}

impl Selection {
    /// Whether `module` runs in the current stage.
    #[inline]
    fn runs(&self, module: &PlannedModule) -> bool {
        self.runs.get(module.index)
    }
}

impl Run {
    pub(crate) fn new(
        message: Message,
        modules: usize,
        trace: bool,
        skip_reasons: bool,
        seed: u64,
        now: Instant,
    ) -> Run {
        Run {
            message,
            place: Place::default(),
            pipeline: InPipeline::default(),
            stage: InStage {
                elapsed: Duration::ZERO,
                #[cfg(debug_assertions)]
                started: now,
                deadline: None,
                any: false,
                parallel: false,
                edits: StageEdits::default(),
                dropped: false,
                ending: None,
            },
            module: InModule::default(),
            selection: Selection {
                filters: Bits::new(modules),
                before: Bits::new(modules),
                rules: Bits::new(modules),
                runs: Bits::new(modules),
                stale_filters: true,
                stale_rules: true,
            },
            clock: now,
            trace: trace.then(Box::default),
            skip_reasons,
            retried: None,
            calls: SmallVec::new(),
            done: None,
            seed: seed | 1,
        }
    }

    fn jitter(&mut self) -> f64 {
        // xorshift64*
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        (self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Notes what `module` did (for a call or a refusal, with its breaker's
    /// state as the call met it: the current module's).
    fn note(
        &mut self,
        pipeline: &PlannedPipeline,
        priority: u32,
        module: &PlannedModule,
        event: TraceEvent,
    ) {
        if let Some(trace) = &mut self.trace {
            let circuit = match event {
                TraceEvent::Skipped(_) => None,
                TraceEvent::Ran { .. } | TraceEvent::Failed { .. } => self.module.circuit,
            };
            trace.entries.push(TraceEntry {
                pipeline: pipeline.config.pipeline_id.clone(),
                priority,
                module: module.module_id.clone(),
                index: module.index,
                event,
                circuit,
            });
        }
    }

    /// Notes every module of the current pipeline from stage `from_stage` on
    /// (and, for the whole `journey`, of every later pipeline) as skipped for
    /// `reason` (or because its pipeline is disabled).
    fn skip_rest<E: Engine>(
        &mut self,
        snapshot: &Snapshot<E>,
        from_stage: usize,
        journey: bool,
        reason: SkipReason,
    ) {
        if self.trace.is_none() {
            return;
        }
        let pipelines = snapshot.plan.pipelines();
        let first = self.place.pipeline;
        let last = if journey { pipelines.len() } else { first + 1 };
        for (p, pipeline) in pipelines.iter().enumerate().take(last).skip(first) {
            let from = if p == first { from_stage } else { 0 };
            for stage in pipeline.stages.iter().skip(from) {
                for module in &stage.modules {
                    let reason = if pipeline.config.enabled {
                        reason.clone()
                    } else {
                        SkipReason::PipelineDisabled
                    };
                    self.note(
                        pipeline,
                        stage.priority,
                        module,
                        TraceEvent::Skipped(reason),
                    );
                }
            }
        }
    }

    /// Notes the current stage's selected modules from position `from` on as
    /// skipped.
    fn skip_stage_rest(
        &mut self,
        pipeline: &PlannedPipeline,
        stage: &PlannedStage,
        from: usize,
        reason: SkipReason,
    ) {
        if self.trace.is_none() {
            return;
        }
        for module in stage.modules.iter().skip(from) {
            if self.selection.runs(module) {
                self.note(
                    pipeline,
                    stage.priority,
                    module,
                    TraceEvent::Skipped(reason.clone()),
                );
            }
        }
    }

    /// Advances the journey as far as it can go now; `Some(at)` when it must
    /// wait until then.
    ///
    /// `clock` is the thread's latest reading of the clock (taken as its batch
    /// started, then moved on by each call's end): the run starts from it and
    /// leaves its own latest reading there. A call is timed from the reading
    /// before it (the previous call's end, the pipeline's start or the end of
    /// a selection), so the thread reads the clock once per call, once per
    /// pipeline and once per selection (twice after the first stage); a
    /// call's time so includes the host's
    /// work since that reading (applying the previous call's edits: well
    /// under a microsecond), and, when a trace is kept, each call is timed
    /// from a fresh reading.
    pub(crate) fn step<E: Engine>(
        &mut self,
        snapshot: &Snapshot<E>,
        runner: &mut E::Runner,
        scratch: &mut Scratch,
        tally: &mut Tally,
        clock: &mut Instant,
    ) -> Option<Instant> {
        if self.trace.is_some() && !self.is_started() {
            // Its journey begins: it waited from being handed over (the run's
            // clock until now) for its batch's engine thread and the messages
            // before it in the batch.
            let queued = clock.saturating_duration_since(self.clock);
            if let Some(trace) = &mut self.trace {
                trace.queued = queued;
            }
        }
        self.clock_to(*clock);
        let wait = self.advance(snapshot, runner, scratch, tally);
        *clock = (*clock).max(self.clock);
        wait
    }

    /// Moves the run's clock on to `now` (never back). Inside a stage, the
    /// time passed counts as the stage's.
    fn clock_to(&mut self, now: Instant) {
        if now > self.clock {
            if self.place.module.is_some() {
                let passed = now.saturating_duration_since(self.clock);
                self.stage.elapsed = self.stage.elapsed.saturating_add(passed);
            }
            self.clock = now;
        }
    }

    fn advance<E: Engine>(
        &mut self,
        snapshot: &Snapshot<E>,
        runner: &mut E::Runner,
        scratch: &mut Scratch,
        tally: &mut Tally,
    ) -> Option<Instant> {
        let plan = &snapshot.plan;
        loop {
            if self.done.is_some() {
                return None;
            }
            let Some(pipeline) = plan.pipelines().get(self.place.pipeline) else {
                self.done = Some(End::Delivered);
                return None;
            };
            if !pipeline.config.enabled {
                self.skip_rest(snapshot, 0, false, SkipReason::PipelineDisabled);
                self.next_pipeline();
                continue;
            }
            let stage_index = match self.place.stage {
                Some(s) => s,
                None if self.passes_through(snapshot, pipeline) => {
                    tally.pipeline(self.place.pipeline, PipelineResult::Processed);
                    tally.pipeline(self.place.pipeline, PipelineResult::Delivered);
                    self.next_pipeline();
                    continue;
                }
                None => {
                    self.start_pipeline(pipeline);
                    tally.pipeline(self.place.pipeline, PipelineResult::Processed);
                    0
                }
            };
            let Some(stage) = pipeline.stages.get(stage_index) else {
                self.pipeline_ended(PipelineResult::Delivered, tally);
                self.next_pipeline();
                continue;
            };
            let mut position = match self.place.module {
                Some(k) => k,
                None => {
                    self.start_stage(snapshot, pipeline, stage, scratch, tally);
                    0
                }
            };
            while stage
                .modules
                .get(position)
                .is_some_and(|module| !self.selection.runs(module))
            {
                position += 1;
            }
            self.place.module = Some(position);
            let Some(module) = stage.modules.get(position) else {
                self.end_stage(snapshot, tally);
                continue;
            };
            if let Some(at) = self.module.retry_at {
                let now = Instant::now();
                if at > now {
                    return Some(at);
                }
                self.clock_to(now);
                self.module.retry_at = None;
            }
            if let Some(wait) = self.call(snapshot, runner, pipeline, stage, module, tally) {
                return Some(wait);
            }
        }
    }

    /// Whether `pipeline`, not started yet, would run none of its modules and
    /// so deliver the message as it is: the selection is up to date (nothing
    /// changed since it was decided that a filter or rule reads), no rule
    /// reads the message's age (which changes as time passes), no trace is
    /// kept (it would list each module skipped), and it selects none of the
    /// pipeline's modules. Nothing in the pipeline then runs to change the
    /// message, so every stage would find the same selection: the pipeline
    /// counts as processed and delivered, as the full walk through its stages
    /// would count it, without reading the clock or visiting its stages.
    fn passes_through<E: Engine>(
        &self,
        snapshot: &Snapshot<E>,
        pipeline: &PlannedPipeline,
    ) -> bool {
        let selection = &self.selection;
        !selection.stale_filters
            && !selection.stale_rules
            && !snapshot.plan.reads().age
            && self.trace.is_none()
            && !selection.runs.any_in(pipeline.module_indices())
    }

    fn start_pipeline(&mut self, pipeline: &PlannedPipeline) {
        // A pipeline's time is its own (execution.md, rule 3): read afresh,
        // not taken over from what ran before it on this thread.
        self.clock = Instant::now();
        self.pipeline = InPipeline {
            keeps_entry: !matches!(
                pipeline.config.error_handling,
                ErrorHandlingStrategy::SkipModule
            ),
            saved: None,
            deadline: self
                .clock
                .checked_add(Duration::from_millis(pipeline.config.global_timeout_ms)),
            started: Some(self.clock),
            selected: false,
        };
        self.place.stage = Some(0);
        self.place.module = None;
    }

    /// The message leaves the current pipeline with `result`: counted, and
    /// the pipeline's time recorded.
    #[inline]
    fn pipeline_ended(&mut self, result: PipelineResult, tally: &mut Tally) {
        tally.pipeline(self.place.pipeline, result);
        if let (Some(started), true) = (self.pipeline.started.take(), self.pipeline.selected) {
            let time = self.clock.saturating_duration_since(started);
            tally.pipeline_time(self.place.pipeline, time);
        }
    }

    fn next_pipeline(&mut self) {
        self.place = Place {
            pipeline: self.place.pipeline + 1,
            stage: None,
            module: None,
        };
        self.pipeline = InPipeline::default();
    }

    fn start_stage<E: Engine>(
        &mut self,
        snapshot: &Snapshot<E>,
        pipeline: &PlannedPipeline,
        stage: &PlannedStage,
        scratch: &mut Scratch,
        tally: &mut Tally,
    ) {
        let plan = &snapshot.plan;
        let reads = plan.reads();
        let now_ms = if reads.age {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        } else {
            0
        };
        // Selection is decided on the message as it reaches the stage; only
        // what a change can affect is evaluated again.
        let first_stage = self.stage_index() == 0;
        let selection = &mut self.selection;
        if selection.stale_filters || selection.stale_rules || reads.age {
            // A pipeline's first selection is timed from the pipeline's
            // start, read just before; a later one from a fresh reading (the
            // host may have merged a parallel stage or noted a trace since).
            let started = if first_stage {
                self.clock
            } else {
                Instant::now()
            };
            // A module runs when its filters and its rules say so: its rules
            // are evaluated only when its filters accept the topic (so a
            // message never reads its payload for the rules of modules its
            // topic does not reach). `rules` holds a verdict for the modules
            // `filters` accepts; for the others it is left as it was. When
            // only the topic changed, the rules' verdicts stand, and only the
            // modules the new topic newly lets in have theirs evaluated.
            let rules_stale = selection.stale_rules || reads.age;
            let any_rules = plan.any_rules();
            if selection.stale_filters {
                if any_rules && !rules_stale {
                    selection.before.copy_from(&selection.filters);
                }
                scratch.select_filters(plan, &self.message.topic, &mut selection.filters);
            }
            if !any_rules {
                selection.runs.copy_from(&selection.filters);
            } else {
                let (filters, before) = (&selection.filters, &selection.before);
                let rules = &mut selection.rules;
                let modules = filters.iter().filter(|&i| rules_stale || !before.get(i));
                plan.select_rules(
                    &self.message,
                    now_ms,
                    &mut scratch.plan,
                    modules,
                    |i, on| rules.set(i, on),
                );
                selection.runs.set_and(&selection.filters, &selection.rules);
            }
            selection.stale_filters = false;
            selection.stale_rules = false;
            let now = Instant::now();
            tally.selection(now.saturating_duration_since(started));
            self.clock = now;
        }
        let mut any = false;
        for module in &stage.modules {
            let runs = self.selection.runs(module);
            any |= runs;
            if !runs && self.trace.is_some() {
                let why = if self.skip_reasons {
                    plan.why_not(module, &self.message, now_ms, &mut scratch.plan)
                } else {
                    String::new()
                };
                self.note(
                    pipeline,
                    stage.priority,
                    module,
                    TraceEvent::Skipped(SkipReason::NotSelected(why)),
                );
            }
        }
        if self.trace.is_some() {
            // The notes above (a skipped module's reasons: its filters run
            // again) are not the stage's time: its budget starts after them.
            self.clock = self.clock.max(Instant::now());
        }
        let clock = self.clock;
        let state = &mut self.stage;
        state.elapsed = Duration::ZERO;
        #[cfg(debug_assertions)]
        {
            state.started = clock;
        }
        state.deadline = stage.stage_timeout.and_then(|t| clock.checked_add(t));
        state.any = any;
        self.pipeline.selected |= any;
        state.parallel = stage.parallel_execution;
        state.edits.clear();
        state.dropped = false;
        state.ending = None;
        self.module = InModule::default();
        self.place.module = Some(0);
    }

    /// The current stage's time goes to its histogram, once, however the
    /// stage ended: in turn, or by a drop, a stop or a dead letter.
    #[inline(always)]
    fn stage_ended<E: Engine>(&mut self, snapshot: &Snapshot<E>, tally: &mut Tally) {
        if self.stage.any {
            self.stage.any = false;
            let series = snapshot.stage_series(self.place.pipeline, self.stage_index());
            #[cfg(debug_assertions)]
            assert_eq!(
                self.stage.elapsed,
                self.clock.saturating_duration_since(self.stage.started),
                "a stage's time kept as the clock moved is its clock's distance from its start"
            );
            tally.stage(series, self.stage.elapsed);
        }
    }

    fn end_stage<E: Engine>(&mut self, snapshot: &Snapshot<E>, tally: &mut Tally) {
        self.stage_ended(snapshot, tally);
        if self.stage.parallel {
            // Failures first, in declaration order, before anything is
            // combined: the first that ends the pipeline decides.
            if let Some(ending) = self.stage.ending.take() {
                let pipeline = &snapshot.plan.pipelines()[self.place.pipeline];
                let stage = &pipeline.stages[self.stage_index()];
                let module = &stage.modules[ending.position];
                let Ending {
                    action,
                    error,
                    attempts,
                    ..
                } = *ending;
                self.module.attempts = attempts;
                // Counted as it failed (`Run::failed`), if it is counted.
                self.module.counted = module.listed_again;
                let all = stage.modules.len();
                self.end_pipeline(
                    snapshot, pipeline, stage, module, action, all, &error, tally,
                );
                return;
            }
            self.combine(snapshot.plan.reads());
            if self.stage.dropped {
                self.dropped(snapshot, tally);
                return;
            }
        }
        self.place.stage = Some(self.stage_index() + 1);
        self.place.module = None;
    }

    fn stage_index(&self) -> usize {
        self.place.stage.unwrap_or(0)
    }

    /// Applies `edits` to the message, first saving what they change of the
    /// message as it entered the pipeline (if a failure may need it back),
    /// and marks the selection stale if they change what a filter or rule
    /// reads (`reads`).
    ///
    /// A field the edits replace whole (topic, payload, key) is moved into
    /// the undo log, not copied: the edits overwrite it anyway. Headers are
    /// edited in place: they are copied only when an edit names a header the
    /// message entered with (see [`SavedHeaders`]).
    fn apply(&mut self, edits: Vec<Edit>, reads: Reads) {
        let message = &mut self.message;
        let mut header_edits = false;
        for edit in &edits {
            match edit {
                Edit::SetTopic(_) => self.selection.stale_filters = true,
                edit => self.selection.stale_rules |= reads.affected_by(edit),
            }
            if !self.pipeline.keeps_entry {
                continue;
            }
            let saved = self.pipeline.saved.get_or_insert_default();
            match edit {
                Edit::SetTopic(_) => {
                    saved
                        .topic
                        .get_or_insert_with(|| std::mem::take(&mut message.topic));
                }
                Edit::SetPayload(_) => {
                    saved
                        .payload
                        .get_or_insert_with(|| std::mem::take(&mut message.payload));
                }
                Edit::SetKey(_) | Edit::ClearKey => {
                    saved
                        .key
                        .get_or_insert_with(|| std::mem::take(&mut message.key));
                }
                // All of the answer's at once, below.
                Edit::SetHeader(..) | Edit::RemoveHeader(_) => header_edits = true,
                Edit::SetTimestamp(_) | Edit::ClearTimestamp => {
                    saved.timestamp.get_or_insert(message.timestamp_ms);
                }
            }
        }
        if let (true, Some(saved)) = (header_edits, &mut self.pipeline.saved) {
            let names = edits.iter().filter_map(|edit| match edit {
                Edit::SetHeader(name, _) | Edit::RemoveHeader(name) => Some(name.as_str()),
                _ => None,
            });
            SavedHeaders::before_edits(&mut saved.headers, &message.headers, names);
        }
        self.message.apply(edits);
    }

    /// The message as it entered the pipeline (the current one is given up).
    fn entry(&mut self) -> Message {
        let mut message = std::mem::take(&mut self.message);
        let Some(saved) = self.pipeline.saved.take() else {
            return message;
        };
        if let Some(topic) = saved.topic {
            message.topic = topic;
        }
        if let Some(key) = saved.key {
            message.key = key;
        }
        if let Some(headers) = saved.headers {
            headers.restore(&mut message.headers);
        }
        if let Some(payload) = saved.payload {
            message.payload = payload;
        }
        if let Some(timestamp) = saved.timestamp {
            message.timestamp_ms = timestamp;
        }
        message
    }

    /// A parallel stage's results, in declaration order, on the stage's input.
    fn combine(&mut self, reads: Reads) {
        for module_edits in self.stage.edits.take() {
            self.apply(module_edits, reads);
        }
    }

    /// The message was dropped in the current stage: nothing after it runs,
    /// here or in any later pipeline.
    fn dropped<E: Engine>(&mut self, snapshot: &Snapshot<E>, tally: &mut Tally) {
        self.stage_ended(snapshot, tally);
        self.pipeline_ended(PipelineResult::Dropped, tally);
        let next_stage = self.stage_index() + 1;
        self.skip_rest(snapshot, next_stage, false, SkipReason::Dropped);
        self.place.pipeline += 1;
        self.skip_rest(snapshot, 0, true, SkipReason::Dropped);
        self.done = Some(End::Dropped);
    }

    /// Calls the current module; `Some(at)` if the message must wait.
    fn call<E: Engine>(
        &mut self,
        snapshot: &Snapshot<E>,
        runner: &mut E::Runner,
        pipeline: &PlannedPipeline,
        stage: &PlannedStage,
        module: &PlannedModule,
        tally: &mut Tally,
    ) -> Option<Instant> {
        if self.trace.is_some() {
            // Trace notes (a skipped module's reasons) cost more than a
            // reading: a traced call's time is its own, and its budget is
            // judged by the clock as it is called (judged by the reading
            // before the notes, a budget spent meanwhile would be the
            // runner's to find: a call, an attempt and a breaker failure
            // that an untraced run does not have).
            self.clock_to(Instant::now());
        }
        let now = self.clock;
        // The tightest budget left, and what running out of it is called.
        let mut deadline: Option<(Instant, ErrorKind)> = self
            .pipeline
            .deadline
            .map(|at| (at, ErrorKind::PipelineTimeout));
        if let Some(at) = self.stage.deadline {
            if deadline.is_none_or(|(d, _)| at <= d) {
                deadline = Some((at, ErrorKind::StageTimeout));
            }
        }
        if let Some((at, kind)) = deadline {
            if at <= now {
                let error = CallError::new(kind, budget_spent(kind));
                self.failed(snapshot, pipeline, stage, module, error, tally);
                return None;
            }
        }
        let breaker = &snapshot.breakers[module.occurrence];
        let probe = match breaker.permit(now) {
            Permit::Call => {
                self.module.circuit = Some(CircuitState::Closed);
                false
            }
            Permit::Probe => {
                self.module.circuit = Some(CircuitState::HalfOpen);
                self.module.probe_out = true;
                true
            }
            Permit::Refuse { reopens_in_ms } => {
                self.module.circuit = Some(CircuitState::Open);
                let error = CallError::new(
                    ErrorKind::CircuitOpen,
                    match reopens_in_ms {
                        // Its cool-down is over and another call is its probe.
                        0 => "the module's circuit breaker is open: its probe call is under way"
                            .to_owned(),
                        ms => format!("the module's circuit breaker is open for {ms} ms more"),
                    },
                );
                self.failed(snapshot, pipeline, stage, module, error, tally);
                return None;
            }
        };
        // A parallel stage's modules all see the message as the stage got it:
        // their edits wait until it ends.
        let mut request = CallRequest::new(&self.message).clock(self.clock);
        if let Some((at, kind)) = deadline {
            request = request.deadline(at, kind);
        }
        self.module.calling = true;
        let report: CallReport = match &snapshot.modules[module.occurrence] {
            Ok(loaded) => match runner.call(&loaded.module, request) {
                Ok(report) => report,
                Err(busy) => {
                    self.module.calling = false;
                    // Nothing ran: a probe that did not happen is given back.
                    if probe {
                        breaker.cancel_probe();
                        self.module.probe_out = false;
                        // Not met after all: the next attempt meets it anew.
                        self.module.circuit = None;
                    }
                    // The clock moves on when the batch runs again.
                    return Some(busy.until);
                }
            },
            // Its file was not found: a failed call that took no time.
            Err(why) => CallReport::new(
                Err(CallError::new(ErrorKind::Unavailable, why.as_ref())),
                0,
                self.clock,
                self.clock,
            ),
        };
        // An answer (an outcome, or an error answered) after the stage's or
        // pipeline's deadline came from a module still running when that
        // budget ran out: it fails with the budget's kind (execution.md). (A
        // runner stops a call at a deadline only as closely as its watchdog
        // ticks.) A failure the runner found (a trap, a limit) keeps its
        // kind: the reading after it may include the host's cleaning up.
        let mut report = report;
        if let Some((_, kind)) = deadline.filter(|&(at, _)| report.ended >= at) {
            match &report.result {
                Ok(_) => report.result = Err(CallError::new(kind, answered_late(kind, None))),
                Err(e) if e.kind() == ErrorKind::GuestError => {
                    let said = answered_late(kind, Some(e.message()));
                    report.result = Err(CallError::new(kind, said));
                }
                Err(_) => {}
            }
        }
        if let Ok(Outcome::Edited(edits)) = &report.result {
            // (In a parallel stage, on top of the edits before it, as the
            // stage's end combines them.)
            let max = snapshot.options.max_message_bytes;
            if let Some(size) = grown_past(&self.message, self.stage.edits.iter(), edits, max) {
                report.result = Err(CallError::new(
                    ErrorKind::InvalidOutput,
                    format!(
                        "its edits would make the message {size} bytes, past the engine's \
                         limit of {max} (Options::max_message_bytes)"
                    ),
                ));
            }
        }
        // A runner's reading, never taken back: a stale one would let a
        // deadline pass unseen. The call ran from the run's clock (its
        // request's) to there: `ran` is how far the clock moves.
        if report.ended > self.clock {
            self.stage.elapsed = self.stage.elapsed.saturating_add(report.ran);
            self.clock = report.ended;
        }
        self.module.calling = false;
        self.module.attempts += report.attempts;
        self.module.time += report.ran;
        breaker.record(report.result.is_ok(), probe, self.clock);
        if probe {
            self.module.probe_out = false;
        }
        match report.result {
            Ok(outcome) => {
                let (result, ran) = match &outcome {
                    Outcome::Unchanged => (CallResult::Unchanged, RanOutcome::Unchanged),
                    Outcome::Dropped => (CallResult::Dropped, RanOutcome::Dropped),
                    Outcome::Edited(edits) => (CallResult::Edited, RanOutcome::Edited(edits.len())),
                };
                tally.call(module.index, result, report.ran);
                if self.module.attempts > 1 {
                    // A retry that succeeded: what failed before is no cause.
                    self.retried = None;
                }
                if self.trace.is_some() {
                    self.note(
                        pipeline,
                        stage.priority,
                        module,
                        TraceEvent::Ran {
                            outcome: ran,
                            time: self.module.time,
                            attempts: self.module.attempts,
                            version: report.version,
                        },
                    );
                }
                let next = self.place.module.unwrap_or(0) + 1;
                match outcome {
                    Outcome::Unchanged => {}
                    Outcome::Dropped if self.stage.parallel => self.stage.dropped = true,
                    Outcome::Dropped => {
                        self.skip_stage_rest(pipeline, stage, next, SkipReason::Dropped);
                        self.dropped(snapshot, tally);
                    }
                    Outcome::Edited(edits) if self.stage.parallel => self.stage.edits.push(edits),
                    // Applied while this module is the current one: a host
                    // failure applying its answer is blamed on it.
                    Outcome::Edited(edits) => self.apply(edits, snapshot.plan.reads()),
                }
                self.count_calls(module);
                self.module = InModule::default();
                self.next_module();
                None
            }
            Err(error) => {
                tally.call(module.index, CallResult::Failed, report.ran);
                let strategy = pipeline.config.error_handling;
                let retries_left = self.module.attempts <= pipeline.config.max_retries;
                if strategy == ErrorHandlingStrategy::RetryWithBackoff
                    && error.kind().is_retryable()
                    && retries_left
                {
                    tally.error(module.index, error.kind());
                    tally.retry(module.index);
                    let jitter = self.jitter();
                    let delay = snapshot.options.backoff.delay(self.module.attempts, jitter);
                    // A delay past what an `Instant` can hold (an uncapped
                    // backoff) waits as long as one can: the deadline ends it.
                    let mut at = self
                        .clock
                        .checked_add(delay)
                        .unwrap_or_else(|| self.clock + Duration::from_secs(u64::from(u32::MAX)));
                    if let Some((limit, _)) = deadline {
                        at = at.min(limit);
                    }
                    self.module.retry_at = Some(at);
                    self.retried = Some(Box::new(error));
                    return Some(at);
                }
                self.failed(snapshot, pipeline, stage, module, error, tally);
                None
            }
        }
    }

    /// The current listing of `module` has ended (its attempts in
    /// `self.module`): its calls are counted for the message if its
    /// occurrence may be called at another listing too.
    #[inline]
    fn count_calls(&mut self, module: &PlannedModule) {
        if !module.listed_again || self.module.attempts == 0 || self.module.counted {
            return;
        }
        self.module.counted = true;
        match self.calls.iter_mut().find(|(o, _)| *o == module.occurrence) {
            Some((_, n)) => *n = n.saturating_add(self.module.attempts),
            None => self.calls.push((module.occurrence, self.module.attempts)),
        }
    }

    /// How many times `module`'s occurrence was called for this message: at
    /// every listing whose calls have ended (counted by
    /// [`Run::count_calls`]) and the current one's if not yet counted.
    fn calls_for_message(&self, module: &PlannedModule) -> u32 {
        let current = if self.module.counted {
            0
        } else {
            self.module.attempts
        };
        if !module.listed_again {
            return current;
        }
        self.calls
            .iter()
            .find(|(o, _)| *o == module.occurrence)
            .map_or(0, |(_, n)| *n)
            + current
    }

    /// Moves to the next position in the stage; returns it.
    fn next_module(&mut self) -> usize {
        let next = self.place.module.unwrap_or(0) + 1;
        self.place.module = Some(next);
        next
    }

    /// A failure that remains after retries: execution.md, "When a module
    /// fails", rule 2 (and 3 for the timeouts).
    fn failed<E: Engine>(
        &mut self,
        snapshot: &Snapshot<E>,
        pipeline: &PlannedPipeline,
        stage: &PlannedStage,
        module: &PlannedModule,
        error: CallError,
        tally: &mut Tally,
    ) {
        let kind = error.kind();
        // A retry refused or cut short: its text says what failed before.
        let error = match self.retried.take() {
            Some(earlier) if earlier.kind() != kind => CallError::new(
                kind,
                format!(
                    "{}; the attempt before failed: {}: {}",
                    error.message(),
                    earlier.kind().as_str(),
                    earlier.message()
                ),
            ),
            _ => error,
        };
        let attempts = self.module.attempts;
        self.count_calls(module);
        tally.error(module.index, kind);
        let strategy = pipeline.config.error_handling;
        let skips = stage.continue_on_error || strategy == ErrorHandlingStrategy::SkipModule;
        let action = if self.stage.parallel && self.stage.ending.is_some() {
            FailureAction::EarlierFailure
        } else if skips {
            match kind {
                ErrorKind::StageTimeout => FailureAction::EndedStage,
                ErrorKind::PipelineTimeout => FailureAction::EndedPipeline,
                _ => FailureAction::Skipped,
            }
        } else if strategy == ErrorHandlingStrategy::StopPipeline {
            FailureAction::StoppedPipeline
        } else {
            FailureAction::DeadLettered
        };
        self.note(
            pipeline,
            stage.priority,
            module,
            TraceEvent::Failed {
                kind,
                error: error.message().to_owned(),
                attempts,
                action,
            },
        );
        let position = self.place.module.unwrap_or(0);
        // Skipped, the stage goes on; so does a parallel stage whatever the
        // failure (its other modules run all the same, and the first failure
        // that ends the pipeline is acted on as the stage ends) unless its
        // time is spent: then its modules not yet called are skipped, as only
        // the module running when the time ran out fails (execution.md,
        // rule 3).
        if action == FailureAction::Skipped || self.stage.parallel {
            let ends = matches!(
                action,
                FailureAction::EndedPipeline
                    | FailureAction::StoppedPipeline
                    | FailureAction::DeadLettered
            );
            if ends {
                self.stage.ending = Some(Box::new(Ending {
                    action,
                    position,
                    error,
                    attempts,
                }));
            }
            self.module = InModule::default();
            if matches!(kind, ErrorKind::StageTimeout | ErrorKind::PipelineTimeout) {
                self.skip_stage_rest(pipeline, stage, position + 1, SkipReason::EarlierFailure);
                self.place.module = Some(stage.modules.len());
            } else {
                self.next_module();
            }
            return;
        }
        match action {
            FailureAction::EndedStage => {
                self.module = InModule::default();
                self.skip_stage_rest(pipeline, stage, position + 1, SkipReason::EarlierFailure);
                self.place.module = Some(stage.modules.len());
            }
            _ => {
                let rest = position + 1;
                self.end_pipeline(
                    snapshot, pipeline, stage, module, action, rest, &error, tally,
                );
            }
        }
    }

    /// A failure of `module` (its attempts in `self.module`) ends the
    /// message's pipeline by `action`; the stage's selected modules from
    /// position `rest` on are noted as skipped.
    #[allow(clippy::too_many_arguments)]
    fn end_pipeline<E: Engine>(
        &mut self,
        snapshot: &Snapshot<E>,
        pipeline: &PlannedPipeline,
        stage: &PlannedStage,
        module: &PlannedModule,
        action: FailureAction,
        rest: usize,
        error: &CallError,
        tally: &mut Tally,
    ) {
        self.skip_stage_rest(pipeline, stage, rest, SkipReason::EarlierFailure);
        if action == FailureAction::DeadLettered {
            self.dead_letter(snapshot, pipeline, stage, module, error, tally);
            return;
        }
        self.stage_ended(snapshot, tally);
        self.module = InModule::default();
        let next_stage = self.stage_index() + 1;
        self.skip_rest(snapshot, next_stage, false, SkipReason::EarlierFailure);
        // Whatever a parallel stage did is not combined: its failures are
        // handled before anything is.
        self.stage.edits.clear();
        let result = match action {
            // Delivered as it stands.
            FailureAction::EndedPipeline => PipelineResult::Delivered,
            FailureAction::StoppedPipeline => {
                self.message = self.entry();
                self.selection.stale_filters = true;
                self.selection.stale_rules = true;
                PipelineResult::Stopped
            }
            _ => unreachable!("{action:?} does not end the pipeline"),
        };
        self.pipeline_ended(result, tally);
        self.next_pipeline();
    }

    /// The message as it entered the pipeline becomes a dead letter of
    /// `module`'s `error`; nothing after it runs.
    fn dead_letter<E: Engine>(
        &mut self,
        snapshot: &Snapshot<E>,
        pipeline: &PlannedPipeline,
        stage: &PlannedStage,
        module: &PlannedModule,
        error: &CallError,
        tally: &mut Tally,
    ) {
        self.stage_ended(snapshot, tally);
        let next_stage = self.stage_index() + 1;
        self.skip_rest(snapshot, next_stage, false, SkipReason::EarlierFailure);
        let mut letter = self.entry();
        let original = std::mem::replace(
            &mut letter.topic,
            snapshot.options.dead_letter_topic.clone(),
        );
        DeadLetterCause::module_failed(
            original,
            &pipeline.config.pipeline_id,
            stage.priority,
            &module.module_id,
            error.kind(),
            error.message(),
            self.calls_for_message(module),
        )
        .append_to(&mut letter.headers);
        self.module = InModule::default();
        tally.dead_letter(module.index, error.kind());
        self.pipeline_ended(PipelineResult::DeadLettered, tally);
        self.place.pipeline += 1;
        self.skip_rest(snapshot, 0, true, SkipReason::EarlierFailure);
        self.message = letter;
        self.done = Some(End::DeadLettered);
    }

    /// The host panicked while running this message: it becomes a dead letter
    /// (kind `trap`) of the module it was at, never lost.
    fn host_failed<E: Engine>(&mut self, snapshot: &Snapshot<E>, panic: &str, tally: &mut Tally) {
        let error = CallError::new(
            ErrorKind::Trap,
            format!("the host failed while running this message (a rustmq-etl bug; please report it): {panic}"),
        );
        let plan = &snapshot.plan;
        let pipeline = plan.pipelines().get(self.place.pipeline);
        let stage = pipeline
            .zip(self.place.stage)
            .and_then(|(p, s)| p.stages.get(s));
        let module = stage
            .zip(self.place.module)
            .and_then(|(s, m)| s.modules.get(m));
        if let (Some(pipeline), Some(stage), Some(module)) = (pipeline, stage, module) {
            if self.module.probe_out {
                snapshot.breakers[module.occurrence].cancel_probe();
                self.module.probe_out = false;
            }
            // The host failed during a call of it: that call counts.
            if std::mem::take(&mut self.module.calling) {
                self.module.attempts += 1;
            }
            // Whatever the strategy: a dead letter keeps the message, and
            // counts the module's calls so far (the dead letter starts its
            // next listing afresh).
            self.dead_letter(snapshot, pipeline, stage, module, &error, tally);
            return;
        }
        // Between modules (a selection, a stage's end): the pipeline it was
        // in, if any, ends with the dead letter, which names the pipeline and
        // the stage it was at (there is no module, nor calls, to name).
        if self.place.stage.is_some() {
            self.stage_ended(snapshot, tally);
            self.pipeline_ended(PipelineResult::DeadLettered, tally);
        }
        let mut letter = self.entry();
        let original = std::mem::replace(
            &mut letter.topic,
            snapshot.options.dead_letter_topic.clone(),
        );
        // (Only a pipeline it entered: between pipelines, the next one's
        // index is no place it was at.)
        let pipeline = pipeline.filter(|_| self.place.stage.is_some());
        DeadLetterCause::host_failed(
            original,
            pipeline.map(|p| p.config.pipeline_id.as_str()),
            pipeline.and(stage).map(|s| s.priority),
            error.message(),
        )
        .append_to(&mut letter.headers);
        self.message = letter;
        self.done = Some(End::DeadLettered);
    }

    /// What became of the message, and its trace: taken out, leaving the
    /// run empty (a run is large: it is not moved to be finished).
    pub(crate) fn finish(&mut self) -> (Disposition, Option<Trace>) {
        let message = std::mem::take(&mut self.message);
        let disposition = match self.done {
            None | Some(End::Delivered) => Disposition::Delivered(message),
            Some(End::Dropped) => Disposition::Dropped,
            Some(End::DeadLettered) => Disposition::DeadLettered(message),
            Some(End::Abandoned) => {
                unreachable!("a batch finishes only the runs it did not abandon")
            }
        };
        let trace = self.trace.take().map(|mut trace| {
            // A stage notes the modules it does not select as it starts, before
            // those it runs: the plan's order (one entry per module) is the
            // order a reader expects.
            trace.entries.sort_by_key(|entry| entry.index);
            *trace
        });
        (disposition, trace)
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.is_some()
    }

    /// Whether the run has begun its journey (entered or passed a pipeline).
    fn is_started(&self) -> bool {
        self.place.pipeline > 0 || self.place.stage.is_some()
    }

    /// Gives up a run not started: it ends as nothing and counts nowhere.
    fn abandon(&mut self) {
        debug_assert!(!self.is_started());
        self.done = Some(End::Abandoned);
    }
}

/// The bytes (topic, key, headers, payload) `edits` would leave `message`
/// with, after the `earlier` edits of its parallel stage (none in a
/// sequential one), if past `max` (0: no limit) and more than it has.
fn grown_past<'a>(
    message: &Message,
    earlier: impl Iterator<Item = &'a [Edit]> + Clone,
    edits: &[Edit],
    max: usize,
) -> Option<usize> {
    // At most what edits bring: the common case reads no further.
    let brought = |edits: &[Edit]| -> usize {
        edits
            .iter()
            .map(|edit| match edit {
                Edit::SetTopic(topic) => topic.len(),
                Edit::SetPayload(bytes) | Edit::SetKey(bytes) => bytes.len(),
                Edit::SetHeader(name, value) => name.len() + value.len(),
                Edit::ClearKey
                | Edit::RemoveHeader(_)
                | Edit::SetTimestamp(_)
                | Edit::ClearTimestamp => 0,
            })
            .sum()
    };
    let most = earlier
        .clone()
        .map(brought)
        .fold(message.full_size(), usize::saturating_add)
        .saturating_add(brought(edits));
    if max == 0 || most <= max {
        return None;
    }
    let mut grown = message.clone();
    for edits in earlier {
        grown.apply(edits.iter().cloned());
    }
    let before = grown.full_size();
    grown.apply(edits.iter().cloned());
    let size = grown.full_size();
    (size > max && size > before).then_some(size)
}

/// Why a call that answered after its stage's or pipeline's deadline failed
/// (an error it answered quoted).
fn answered_late(kind: ErrorKind, error: Option<&str>) -> String {
    let budget = budget_of(kind);
    match error {
        None => format!(
            "the {budget}'s time ran out while the module ran (its answer came after, and is \
             not used)"
        ),
        Some(error) => format!(
            "the {budget}'s time ran out while the module ran (it answered after, with an \
             error: {error})"
        ),
    }
}

fn budget_spent(kind: ErrorKind) -> String {
    format!(
        "the {}'s time ran out before the module could run",
        budget_of(kind)
    )
}

/// Whose budget running out `kind` (a stage's or a pipeline's timeout) says.
fn budget_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::StageTimeout => "stage",
        _ => "pipeline",
    }
}

/// A slice of a caller's messages, run on one engine thread.
pub(crate) struct Batch<E: Engine> {
    pub(crate) snapshot: Arc<Snapshot<E>>,
    pub(crate) runs: Vec<Run>,
    pub(crate) reply: Option<oneshot::Sender<Vec<Processed>>>,
    /// Its messages' places among those in flight, given back as it answers
    /// (or when the engine drops it unrun).
    pub(crate) permits: Option<crate::orchestrator::Room>,
    /// Each message to its end before the next starts
    /// ([`crate::ProcessOptions::in_order`]).
    pub(crate) in_order: bool,
}

/// What an engine thread keeps between batches for the snapshot it ran last.
struct ThreadState {
    snapshot: u64,
    scratch: Scratch,
    /// Empty between batches: a batch's counts go to the totals before the
    /// thread runs anything else.
    tally: Tally,
}

thread_local! {
    static STATE: std::cell::RefCell<Option<ThreadState>> = const { std::cell::RefCell::new(None) };
}

impl<E: Engine> Task<E::Runner> for Batch<E> {
    fn run(&mut self, runner: &mut E::Runner) -> Step {
        let mut clock = Instant::now();
        let snapshot = self.snapshot.clone();
        let mut next: Option<Instant> = None;
        let mut processed = Vec::new();
        STATE.with(|cell| {
            let mut cell = cell.borrow_mut();
            let state = match &mut *cell {
                Some(state) if state.snapshot == snapshot.id => state,
                other => other.insert(ThreadState {
                    snapshot: snapshot.id,
                    scratch: Scratch::new(&snapshot.plan),
                    tally: Tally::new(&snapshot.plan),
                }),
            };
            let (scratch, tally) = (&mut state.scratch, &mut state.tally);
            let reply = &self.reply;
            for run in &mut self.runs {
                if run.is_done() {
                    continue;
                }
                if !run.is_started() && caller_gone(reply) {
                    // Nobody waits for the answer any more: a message not
                    // started does not start. One started runs to its end
                    // (and is counted), as the metrics of what it did so far
                    // expect.
                    run.abandon();
                    continue;
                }
                match contain(|| run.step(&snapshot, runner, scratch, tally, &mut clock)) {
                    Ok(Some(at)) if self.in_order => {
                        // It waits (a retry's delay): the next message starts
                        // only after it has ended.
                        next = Some(at);
                        break;
                    }
                    Ok(Some(at)) => next = Some(next.map_or(at, |n: Instant| n.min(at))),
                    Ok(None) => {}
                    Err(panic) => {
                        // The panic took the run's clock with it, and may
                        // have left the selection scratch half-written: start
                        // it afresh (and the verdict kept with it).
                        clock = Instant::now();
                        *scratch = Scratch::new(&snapshot.plan);
                        run.host_failed(&snapshot, &panic, tally)
                    }
                }
            }
            if next.is_none() {
                self.runs.retain(|run| run.done != Some(End::Abandoned));
                processed = self
                    .runs
                    .iter_mut()
                    .map(|run| {
                        let (disposition, trace) = run.finish();
                        tally.message(&disposition);
                        Processed {
                            disposition,
                            config_version: snapshot.version,
                            trace,
                        }
                    })
                    .collect();
                self.runs = Vec::new();
            }
            // What this step counted, before the thread runs another batch
            // (of this snapshot or another).
            snapshot.stats.add(&snapshot.table, tally);
        });
        if let Some(at) = next {
            return Step::WaitUntil(at);
        }
        // Room for more before the answer, so that a caller answered can
        // send its next batch at once.
        drop(self.permits.take());
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(processed);
        }
        // After the answer, and contained: the embedding program's metrics
        // recorder failing loses no answer.
        if snapshot.stats.publish_due() {
            if let Err(panic) = contain(|| snapshot.stats.publish(false)) {
                log::error!(
                    "rustmq-etl: publishing the metrics panicked (in the metrics recorder?): \
                     {panic}; the messages were answered, the metrics may be behind"
                );
            }
        }
        Step::Done
    }

    /// Whether the engine may drop the batch unrun: its caller is gone and
    /// none of its messages is under way (one started runs to its end and is
    /// counted, though it waits, as the metrics of what it did so far expect).
    fn is_cancelled(&self) -> bool {
        caller_gone(&self.reply)
            && !self
                .runs
                .iter()
                .any(|run| run.is_started() && !run.is_done())
    }
}

/// Whether nobody waits for a batch's answer any more.
fn caller_gone(reply: &Option<oneshot::Sender<Vec<Processed>>>) -> bool {
    reply.as_ref().is_none_or(|r| r.is_closed())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// `any_in` agrees with asking for each number of the range, in
        /// sets kept inline and on the heap.
        #[test]
        fn any_in_agrees_with_each_number(
            len in 1usize..300,
            on in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
            start in 0usize..310,
            width in 0usize..140,
        ) {
            let mut bits = Bits::new(len);
            for i in &on {
                bits.set(i.index(len), true);
            }
            let range = start..start + width;
            let expected = range.clone().any(|i| bits.get(i));
            prop_assert_eq!(bits.any_in(range), expected);
        }

        /// `iter` lists the numbers `get` says are in the set, ascending,
        /// inline and on the heap.
        #[test]
        fn iter_lists_what_get_finds(
            len in 1usize..300,
            on in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let mut bits = Bits::new(len);
            for i in &on {
                bits.set(i.index(len), true);
            }
            let expected: Vec<usize> = (0..len).filter(|&i| bits.get(i)).collect();
            prop_assert_eq!(bits.iter().collect::<Vec<_>>(), expected);
        }
    }

    /// An answer of more than a few header edits copies the entry's headers
    /// in one pass instead of looking for each name among them (with
    /// thousands of headers and edits, that took seconds), even when no
    /// name is the entry's; a few are looked for, and copy nothing unless
    /// one names an entry header.
    #[test]
    fn many_header_edits_copy_the_entry_headers_instead_of_searching_them() {
        let entry: Headers = (0..1000).map(|i| (format!("h{i}"), "v")).collect();
        let names = |n: usize| (0..n).map(|i| format!("new{i}")).collect::<Vec<_>>();
        let before = |names: &[String], mut saved: Option<SavedHeaders>| {
            SavedHeaders::before_edits(&mut saved, &entry, names.iter().map(String::as_str));
            saved
        };
        let few = names(FEW_HEADER_EDITS);
        assert!(matches!(
            before(&few, None),
            Some(SavedHeaders::Prefix(1000))
        ));
        let many = names(FEW_HEADER_EDITS + 1);
        assert!(matches!(before(&many, None), Some(SavedHeaders::Copy(h)) if h == entry));
        // Headers added since the entry are not copied.
        assert!(matches!(
            before(&many, Some(SavedHeaders::Prefix(10))),
            Some(SavedHeaders::Copy(h)) if h.len() == 10 && h.iter().eq(entry.iter().take(10))
        ));
        let own = vec!["new0".to_owned(), "h999".to_owned()];
        assert!(matches!(before(&own, None), Some(SavedHeaders::Copy(h)) if h == entry));
    }
}
