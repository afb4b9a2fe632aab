//! The orchestrator against a plain reference of execution.md, on generated
//! configurations, module behaviours and batches of messages.
//!
//! The reference below is written from execution.md alone, the simplest way:
//! whole messages cloned at every pipeline's entry, a parallel stage's
//! results gathered in a vector and combined afterwards, a breaker as a
//! counter. It decides selection with the filter and condition reference
//! implementations (selection.md), at each stage's entry. The orchestrator
//! runs the same configuration on stand-in modules (the same behaviours)
//! with its batch in input order, so that what a message meets that earlier
//! ones left (an open breaker) is that of input order. Each message's end
//! (delivered, dropped, dead letter with its headers) and trace (for every
//! module listed: ran with its outcome and attempts, skipped and why, or
//! failed with its kind, attempts and the strategy's action; and the breaker
//! as the call met it) must be the reference's. Out of scope: the timeouts
//! and the breaker's cool-down and probe (real time), and what is the
//! engine's own: the texts for people (`etl-dlq-error`, why a module was not
//! selected). Applying one answer's edits is core's `Message::apply` (the
//! ABI's rule, not execution.md's).
//!
//! Readings of execution.md encoded here (the engine's, documented in
//! docs/execution.md): a call the breaker refuses is a failure of kind
//! `circuit_open` handled by the strategy (its trace entry says so, with the
//! breaker `open`), not a skip; a trace entry's attempts count the calls
//! of the module's turn at that listing, and `etl-dlq-attempts` every call
//! of the failed occurrence for the message ("how many times M was called
//! for this message": at every listing, in every pipeline, undone ones too;
//! a refusal is no call); a
//! failure that is not retried under `RetryWithBackoff` (`circuit_open`)
//! makes a dead letter, as retries spent do; a module not selected is noted
//! so as its stage is reached, even if the stage then ends early.

#[path = "../../condition/tests/reference/mod.rs"]
mod condition_reference;
#[path = "../../filter/tests/reference/mod.rs"]
mod filter_reference;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use rustmq_etl_config::{
    ComparisonOperator, ConditionType, ConditionalRule, Config, ErrorHandlingStrategy,
    EtlModuleInstance, EtlPipelineConfig, EtlStage, FilterType, Format, ModuleInstanceConfig,
    TopicFilter,
};
use rustmq_etl_core::{Bytes, Edit, ErrorKind, Message, Outcome};
use rustmq_etl_orchestrator::{
    dead_letter_headers as dlq, Backoff, BreakerSettings, CircuitState, DeadLetterCause,
    Disposition, FailureAction, Options, Orchestrator, ProcessOptions, RanOutcome, SkipReason,
    TraceEvent,
};
use rustmq_etl_testkit::{Behaviour, StandIn};
use serde_json::json;

const MODULES: usize = 6;
const DEAD_LETTER_TOPIC: &str = "dlq";

/// What a module does with a message, the same in the reference and on the
/// stand-in.
#[derive(Debug, Clone, Copy)]
enum Does {
    Nothing,
    SetHeader(&'static str, &'static str),
    SetTopic(&'static str),
    SetPayload(&'static str),
    /// A header and the topic in one answer.
    Two(&'static str, &'static str),
    Drop,
    Fail(ErrorKind),
    /// Fails (trap) the first this many times it is called for a message,
    /// then answers as `Nothing`.
    FailFirst(u32),
    /// Fails with this kind when header `h` is "1", else drops when the
    /// topic is "B", else sets header `k`.
    Depends(ErrorKind),
}

/// The calls so far of each module for each message (`id` header).
type Calls = Arc<Mutex<HashMap<(String, usize), u32>>>;

fn id_of(message: &Message) -> String {
    message.headers.get("id").unwrap_or("").to_owned()
}

impl Does {
    /// The answer of module `module` called on `message`, counting the call.
    fn answer(self, module: usize, message: &Message, calls: &Calls) -> Result<Outcome, ErrorKind> {
        let call = {
            let mut calls = calls.lock().unwrap();
            let n = calls.entry((id_of(message), module)).or_insert(0);
            *n += 1;
            *n
        };
        let edit = |edits: Vec<Edit>| Ok(Outcome::Edited(edits));
        match self {
            Does::Nothing => Ok(Outcome::Unchanged),
            Does::SetHeader(name, value) => edit(vec![Edit::SetHeader(name.into(), value.into())]),
            Does::SetTopic(topic) => edit(vec![Edit::SetTopic(topic.into())]),
            Does::SetPayload(payload) => edit(vec![Edit::SetPayload(Bytes::from_static(
                payload.as_bytes(),
            ))]),
            Does::Two(value, topic) => edit(vec![
                Edit::SetHeader("h".into(), value.into()),
                Edit::SetTopic(topic.into()),
            ]),
            Does::Drop => Ok(Outcome::Dropped),
            Does::Fail(kind) => Err(kind),
            Does::FailFirst(n) if call <= n => Err(ErrorKind::Trap),
            Does::FailFirst(_) => Ok(Outcome::Unchanged),
            Does::Depends(kind) if message.headers.get("h") == Some("1") => Err(kind),
            Does::Depends(_) if message.topic == "B" => Ok(Outcome::Dropped),
            Does::Depends(_) => edit(vec![Edit::SetHeader("k".into(), format!("m{module}"))]),
        }
    }
}

fn does() -> impl Strategy<Value = Does> {
    let kind = prop::sample::select(vec![
        ErrorKind::Trap,
        ErrorKind::GuestError,
        ErrorKind::InvalidOutput,
        ErrorKind::MemoryLimit,
        ErrorKind::Timeout,
        ErrorKind::Unavailable,
    ]);
    let value = prop::sample::select(vec!["1", "2"]);
    let topic = prop::sample::select(vec!["a", "a.b", "B", "c"]);
    prop_oneof![
        2 => Just(Does::Nothing),
        2 => (prop::sample::select(vec!["h", "k"]), value.clone()).prop_map(|(n, v)| Does::SetHeader(n, v)),
        2 => topic.clone().prop_map(Does::SetTopic),
        1 => prop::sample::select(vec!["x", "y"]).prop_map(Does::SetPayload),
        1 => (value, topic).prop_map(|(v, t)| Does::Two(v, t)),
        1 => Just(Does::Drop),
        2 => kind.clone().prop_map(Does::Fail),
        2 => (1u32..4).prop_map(Does::FailFirst),
        2 => kind.prop_map(Does::Depends),
    ]
}

fn topic_filter() -> impl Strategy<Value = TopicFilter> {
    (
        prop::sample::select(vec![FilterType::Exact, FilterType::Prefix]),
        prop::sample::select(vec!["a", "B", "c"]),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(filter_type, pattern, negate)| TopicFilter {
            filter_type,
            pattern: pattern.to_owned(),
            case_sensitive: true,
            negate,
        })
}

fn rule() -> impl Strategy<Value = ConditionalRule> {
    (prop::sample::select(vec!["1", "2"]), any::<bool>()).prop_map(|(value, negate)| {
        ConditionalRule {
            condition_type: ConditionType::HeaderValue,
            field_path: "h".to_owned(),
            operator: ComparisonOperator::Equals,
            value: json!(value),
            negate,
        }
    })
}

/// Module `m`, sometimes with other settings: another occurrence of the
/// same module, with a breaker of its own.
fn module(m: usize) -> impl Strategy<Value = EtlModuleInstance> {
    (
        prop::collection::vec(topic_filter(), 0..2),
        prop::collection::vec(rule(), 0..2),
        prop::bool::weighted(0.25),
    )
        .prop_map(
            move |(topic_filters, conditional_rules, other)| EtlModuleInstance {
                module_id: format!("m{m}"),
                instance_config: ModuleInstanceConfig {
                    custom_config: if other { json!({"v": 1}) } else { json!(null) },
                    ..ModuleInstanceConfig::default()
                },
                topic_filters,
                conditional_rules,
            },
        )
}

fn pipeline(index: usize) -> impl Strategy<Value = EtlPipelineConfig> {
    let stages = prop::collection::btree_set(0u32..6, 1..4).prop_flat_map(|priorities| {
        priorities
            .into_iter()
            .rev() // declared out of order
            .map(|priority| {
                // A module may be listed more than once in a stage: with the
                // same settings, one occurrence run for each listing.
                let modules = prop::collection::vec(0..MODULES, 1..4)
                    .prop_flat_map(|ids| ids.into_iter().map(module).collect::<Vec<_>>());
                (modules, any::<bool>(), prop::bool::weighted(0.2)).prop_map(
                    move |(modules, parallel, continue_on_error)| EtlStage {
                        priority,
                        modules,
                        parallel_execution: parallel,
                        stage_timeout_ms: None,
                        continue_on_error,
                    },
                )
            })
            .collect::<Vec<_>>()
    });
    let strategy = prop::sample::select(vec![
        ErrorHandlingStrategy::StopPipeline,
        ErrorHandlingStrategy::SkipModule,
        ErrorHandlingStrategy::RetryWithBackoff,
        ErrorHandlingStrategy::SendToDeadLetter,
    ]);
    (stages, prop::bool::weighted(0.9), strategy, 0u32..3).prop_map(
        move |(stages, enabled, error_handling, max_retries)| EtlPipelineConfig {
            pipeline_id: format!("p{index}"),
            name: String::new(),
            description: None,
            enabled,
            stages,
            global_timeout_ms: 60_000,
            max_retries,
            error_handling,
        },
    )
}

fn message() -> impl Strategy<Value = Message> {
    (
        prop::sample::select(vec!["a", "a.b", "B", "c"]),
        prop::option::of(prop::sample::select(vec!["1", "2"])),
    )
        .prop_map(|(topic, h)| {
            let mut m = Message::new(topic, "p");
            if let Some(h) = h {
                m.headers.push("h", h);
            }
            m
        })
}

/// What became of a message, by the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Delivered(Message),
    Dropped,
    DeadLettered(Message),
}

/// A trace entry, by the reference: execution.md's "ran (outcome,
/// attempts), skipped, or failed (kind, attempts, and what the strategy
/// did)" (why a module was skipped, and the texts, are the engine's own).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Noted {
    Ran(RanOutcome, u32),
    Skipped(Why),
    Failed(ErrorKind, u32, FailureAction),
}

/// Why a module did not run (execution.md: "selection, circuit, an earlier
/// failure"; and a drop, which ends the journey).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Disabled,
    NotSelected,
    EarlierFailure,
    Dropped,
}

/// A message's end and its trace, each entry with the breaker it met.
type Journey = (End, Vec<(Noted, Option<CircuitState>)>);

/// A module listing: pipeline index, stage priority, position in the stage.
type Listing = (usize, u32, usize);

/// execution.md, plainly.
struct Reference<'a> {
    config: &'a Config,
    does: &'a [Does],
    calls: Calls,
    breaker_failures: u32,
    /// A cool-down of zero: an open breaker lets the next call through as
    /// its probe, whose success closes it and whose failure keeps it open
    /// (without, the cool-down never ends in a test's time).
    probes: bool,
    /// Per occurrence (module and settings): consecutive failed calls, open.
    breakers: HashMap<String, (u32, bool)>,
    /// The breaker as the last call met it: closed for a call let through,
    /// half-open for a probe, open for a refusal.
    last_met: Option<CircuitState>,
    /// Per listing reached: the breaker as the message's last call of it met
    /// it (none if never called).
    met: HashMap<Listing, CircuitState>,
    /// Per occurrence: the calls made for the current message.
    called: HashMap<String, u32>,
    /// The current message's trace: what happened at each listing reached.
    noted: HashMap<Listing, Noted>,
    /// How the current message's journey ended early: why every listing
    /// not reached was skipped.
    ended_by: Option<Why>,
}

/// How a module's turn ended.
enum Turn {
    /// What it answered, and the calls made.
    Answered(Outcome, u32),
    /// The failure that remains after retries, and the calls made.
    Failed(ErrorKind, u32),
}

/// What a failure that remains does (execution.md, "When a module fails", 2).
enum Handling {
    Skip,
    Stop,
    DeadLetter,
}

impl Reference<'_> {
    fn selected(&self, module: &EtlModuleInstance, message: &Message) -> bool {
        let filters: Vec<_> = module
            .topic_filters
            .iter()
            .map(|f| f.to_filter().unwrap())
            .collect();
        filter_reference::Reference::new(&[filters]).accepts(0, &message.topic)
            && module
                .conditional_rules
                .iter()
                .all(|r| condition_reference::holds(&r.to_rule().unwrap(), message, 0))
    }

    /// The occurrence (module and settings) a listing runs.
    fn occurrence(module: &EtlModuleInstance) -> String {
        format!(
            "{}/{}",
            module.module_id, module.instance_config.custom_config
        )
    }

    /// One call, through the occurrence's breaker.
    fn call(
        &mut self,
        module: &EtlModuleInstance,
        message: &Message,
    ) -> Result<Outcome, ErrorKind> {
        let limit = self.breaker_failures;
        let occurrence = Self::occurrence(module);
        let breaker = self
            .breakers
            .entry(occurrence.clone())
            .or_insert((0, false));
        let probe = breaker.1;
        if probe && !self.probes {
            self.last_met = Some(CircuitState::Open);
            return Err(ErrorKind::CircuitOpen);
        }
        self.last_met = Some(if probe {
            CircuitState::HalfOpen
        } else {
            CircuitState::Closed
        });
        *self.called.entry(occurrence.clone()).or_default() += 1;
        let index: usize = module.module_id[1..].parse().unwrap();
        let result = self.does[index].answer(index, message, &self.calls);
        let breaker = self.breakers.get_mut(&occurrence).unwrap();
        match (result.is_ok(), probe) {
            // Only the probe's success closes it; its failure keeps it open.
            (true, true) => *breaker = (0, false),
            (false, true) => {}
            (true, false) => breaker.0 = 0,
            (false, false) => {
                breaker.0 += 1;
                if breaker.0 >= limit {
                    breaker.1 = true;
                }
            }
        }
        result
    }

    /// A module's turn: its calls, retried as `RetryWithBackoff` says.
    fn turn(
        &mut self,
        pipeline: &EtlPipelineConfig,
        module: &EtlModuleInstance,
        message: &Message,
    ) -> Turn {
        let mut called = 0;
        loop {
            let result = self.call(module, message);
            let refused = result == Err(ErrorKind::CircuitOpen);
            if !refused {
                called += 1;
            }
            match result {
                Ok(outcome) => return Turn::Answered(outcome, called),
                Err(kind) => {
                    let retryable = !matches!(
                        kind,
                        ErrorKind::StageTimeout
                            | ErrorKind::PipelineTimeout
                            | ErrorKind::CircuitOpen
                    );
                    if pipeline.error_handling == ErrorHandlingStrategy::RetryWithBackoff
                        && retryable
                        && called <= pipeline.max_retries
                    {
                        continue;
                    }
                    return Turn::Failed(kind, called);
                }
            }
        }
    }

    /// Notes the breaker as the last call of the turn at `at` met it.
    fn note_met(&mut self, at: Listing) {
        if let Some(met) = self.last_met.take() {
            self.met.insert(at, met);
        }
    }

    /// Notes a turn that answered.
    fn ran(&mut self, at: Listing, outcome: &Outcome, attempts: u32) {
        let outcome = match outcome {
            Outcome::Unchanged => RanOutcome::Unchanged,
            Outcome::Dropped => RanOutcome::Dropped,
            Outcome::Edited(edits) => RanOutcome::Edited(edits.len()),
        };
        self.noted.insert(at, Noted::Ran(outcome, attempts));
    }

    fn handling(pipeline: &EtlPipelineConfig, stage: &EtlStage) -> Handling {
        if stage.continue_on_error || pipeline.error_handling == ErrorHandlingStrategy::SkipModule {
            Handling::Skip
        } else if pipeline.error_handling == ErrorHandlingStrategy::StopPipeline {
            Handling::Stop
        } else {
            Handling::DeadLetter
        }
    }

    /// Notes a failure and what its handling does.
    fn failed(&mut self, at: Listing, kind: ErrorKind, attempts: u32, handling: &Handling) {
        let action = match handling {
            Handling::Skip => FailureAction::Skipped,
            Handling::Stop => FailureAction::StoppedPipeline,
            Handling::DeadLetter => FailureAction::DeadLettered,
        };
        self.noted.insert(at, Noted::Failed(kind, attempts, action));
    }

    /// Notes the listings of `stage` from `from` on that were selected and
    /// not reached as skipped for `why`.
    fn skip_rest_of_stage(&mut self, p: usize, stage: &EtlStage, from: usize, why: Why) {
        for position in from..stage.modules.len() {
            self.noted
                .entry((p, stage.priority, position))
                .or_insert(Noted::Skipped(why));
        }
    }

    /// `pipeline` stopped in `stage`: what it did not reach is skipped for
    /// an earlier failure.
    fn stop(&mut self, p: usize, pipeline: &EtlPipelineConfig, stage: &EtlStage) {
        for later in pipeline
            .stages
            .iter()
            .filter(|s| s.priority >= stage.priority)
        {
            self.skip_rest_of_stage(p, later, 0, Why::EarlierFailure);
        }
    }

    /// The trace of the message just run: every listing in the
    /// configuration's order; one not reached was skipped because its
    /// pipeline is disabled, or for what ended the journey.
    fn trace(&mut self) -> Vec<(Noted, Option<CircuitState>)> {
        let mut trace = Vec::new();
        let ended_by = self.ended_by.take();
        for (p, source) in self.config.pipelines().iter().enumerate() {
            let mut stages: Vec<&EtlStage> = source.pipeline.stages.iter().collect();
            stages.sort_by_key(|s| s.priority);
            for stage in stages {
                for position in 0..stage.modules.len() {
                    let at = (p, stage.priority, position);
                    let noted = self.noted.remove(&at);
                    let met = self.met.remove(&at);
                    trace.push(match noted {
                        Some(noted @ Noted::Skipped(_)) => (noted, None),
                        Some(noted) => (noted, met),
                        None if !source.pipeline.enabled => (Noted::Skipped(Why::Disabled), None),
                        None => (
                            Noted::Skipped(ended_by.expect("reached, or after an end")),
                            None,
                        ),
                    });
                }
            }
        }
        trace
    }

    fn dead_letter(
        &self,
        entry: &Message,
        pipeline: &EtlPipelineConfig,
        stage: &EtlStage,
        module: &EtlModuleInstance,
        kind: ErrorKind,
    ) -> End {
        let attempts = self.called.get(&Self::occurrence(module)).copied();
        let mut letter = entry.clone();
        letter.topic = DEAD_LETTER_TOPIC.to_owned();
        for (name, value) in [
            (dlq::ORIGINAL_TOPIC, entry.topic.clone()),
            (dlq::PIPELINE, pipeline.pipeline_id.clone()),
            (dlq::STAGE, stage.priority.to_string()),
            (dlq::MODULE, module.module_id.clone()),
            (dlq::ERROR_KIND, kind.as_str().to_owned()),
            (dlq::ERROR, String::new()),
            (dlq::ATTEMPTS, attempts.unwrap_or(0).to_string()),
        ] {
            letter.headers.push(name, value);
        }
        End::DeadLettered(letter)
    }

    /// A message's whole journey, and its trace.
    fn run(&mut self, message: Message) -> Journey {
        self.called.clear();
        let end = self.journey(message);
        (end, self.trace())
    }

    fn journey(&mut self, mut message: Message) -> End {
        let config = self.config;
        'pipelines: for (p, source) in config.pipelines().iter().enumerate() {
            let pipeline = &source.pipeline;
            if !pipeline.enabled {
                continue;
            }
            let entry = message.clone();
            let mut stages: Vec<&EtlStage> = pipeline.stages.iter().collect();
            stages.sort_by_key(|s| s.priority);
            for stage in stages {
                // Selection on the message as it reaches the stage.
                let selected: Vec<(usize, &EtlModuleInstance)> = stage
                    .modules
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| self.selected(m, &message))
                    .collect();
                for position in 0..stage.modules.len() {
                    if !selected.iter().any(|(p, _)| *p == position) {
                        self.noted.insert(
                            (p, stage.priority, position),
                            Noted::Skipped(Why::NotSelected),
                        );
                    }
                }
                let handling = Self::handling(pipeline, stage);
                if stage.parallel_execution {
                    let input = message.clone();
                    let turns: Vec<(usize, &EtlModuleInstance, Turn)> = selected
                        .iter()
                        .map(|(position, m)| {
                            let turn = self.turn(pipeline, m, &input);
                            self.note_met((p, stage.priority, *position));
                            (*position, *m, turn)
                        })
                        .collect();
                    // Failures first, in declaration order; the first that
                    // ends the pipeline decides.
                    let mut ending: Option<End> = None;
                    let mut stopped = false;
                    for (position, module, turn) in &turns {
                        let at = (p, stage.priority, *position);
                        match turn {
                            Turn::Answered(outcome, attempts) => self.ran(at, outcome, *attempts),
                            Turn::Failed(kind, attempts) if ending.is_some() || stopped => {
                                self.noted.insert(
                                    at,
                                    Noted::Failed(*kind, *attempts, FailureAction::EarlierFailure),
                                );
                            }
                            Turn::Failed(kind, attempts) => {
                                self.failed(at, *kind, *attempts, &handling);
                                match handling {
                                    Handling::Skip => {}
                                    Handling::Stop => stopped = true,
                                    Handling::DeadLetter => {
                                        ending =
                                            Some(self.dead_letter(
                                                &entry, pipeline, stage, module, *kind,
                                            ));
                                    }
                                }
                            }
                        }
                    }
                    if let Some(end) = ending {
                        self.ended_by = Some(Why::EarlierFailure);
                        return end;
                    }
                    if stopped {
                        self.stop(p, pipeline, stage);
                        message = entry;
                        continue 'pipelines;
                    }
                    let mut dropped = false;
                    for (_, _, turn) in turns {
                        match turn {
                            Turn::Answered(Outcome::Edited(edits), _) => message.apply(edits),
                            Turn::Answered(Outcome::Dropped, _) => dropped = true,
                            _ => {}
                        }
                    }
                    if dropped {
                        self.ended_by = Some(Why::Dropped);
                        return End::Dropped;
                    }
                } else {
                    for (position, m) in selected {
                        let at = (p, stage.priority, position);
                        let turn = self.turn(pipeline, m, &message);
                        self.note_met(at);
                        match turn {
                            Turn::Answered(outcome, attempts) => {
                                self.ran(at, &outcome, attempts);
                                match outcome {
                                    Outcome::Unchanged => {}
                                    Outcome::Edited(edits) => message.apply(edits),
                                    Outcome::Dropped => {
                                        self.skip_rest_of_stage(p, stage, position, Why::Dropped);
                                        self.ended_by = Some(Why::Dropped);
                                        return End::Dropped;
                                    }
                                }
                            }
                            Turn::Failed(kind, attempts) => {
                                self.failed(at, kind, attempts, &handling);
                                match handling {
                                    Handling::Skip => {}
                                    Handling::Stop => {
                                        self.stop(p, pipeline, stage);
                                        message = entry;
                                        continue 'pipelines;
                                    }
                                    Handling::DeadLetter => {
                                        self.skip_rest_of_stage(
                                            p,
                                            stage,
                                            position,
                                            Why::EarlierFailure,
                                        );
                                        self.ended_by = Some(Why::EarlierFailure);
                                        return self.dead_letter(&entry, pipeline, stage, m, kind);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        End::Delivered(message)
    }
}

/// The stand-in engine with every module doing what `does` says.
fn engine(does: &[Does], calls: &Calls) -> Arc<StandIn> {
    let engine = Arc::new(StandIn::new(1));
    for (index, what) in does.iter().copied().enumerate() {
        let calls = calls.clone();
        engine.module(&format!("m{index}"), move |message| {
            match what.answer(index, message, &calls) {
                Ok(outcome) => Behaviour::ok(outcome),
                Err(kind) => Behaviour::fail(kind, "as generated"),
            }
        });
    }
    engine
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_orchestrator_does_what_execution_md_says(
        pipelines in (1usize..4).prop_flat_map(|n| (0..n).map(pipeline).collect::<Vec<_>>()),
        does in prop::collection::vec(does(), MODULES),
        messages in prop::collection::vec(message(), 1..6),
        breaker_failures in 1u32..6,
        probes in prop::bool::weighted(0.3),
    ) {
        let text = serde_json::to_string(&json!({ "pipelines": pipelines })).unwrap();
        let config = Config::from_text(&text, Format::Json, None).unwrap().config;
        let messages: Vec<Message> = messages
            .into_iter()
            .enumerate()
            .map(|(i, mut m)| {
                m.headers.push("id", i.to_string());
                m
            })
            .collect();

        let mut reference = Reference {
            config: &config,
            does: &does,
            calls: Calls::default(),
            breaker_failures,
            probes,
            breakers: HashMap::new(),
            last_met: None,
            met: HashMap::new(),
            called: HashMap::new(),
            noted: HashMap::new(),
            ended_by: None,
        };
        let expected: Vec<Journey> = messages
            .iter()
            .cloned()
            .map(|m| {
                reference.run(m)
            })
            .collect();

        let options = Options::default()
            .dead_letter_topic(DEAD_LETTER_TOPIC)
            // Retries at once: the waits are real time, and out of scope.
            .backoff(Backoff::default().base(Duration::ZERO).factor(2).cap(Duration::ZERO))
            .breaker(BreakerSettings::default().failures(breaker_failures).cool_down(if probes { Duration::ZERO } else { Duration::from_secs(3600) }));
        // Through the engine's threads, then on this thread: the same rules.
        for on_this_thread in [false, true] {
            let calls = Calls::default();
            let o = Orchestrator::new(engine(&does, &calls), &config, |_: &str| Ok(Vec::new()), options.clone())
                .unwrap();
            let process = ProcessOptions::default().in_order(true).trace(true);
            let processed = if on_this_thread {
                o.on_this_thread().unwrap().process_batch(messages.clone(), process)
            } else {
                o.process_batch_blocking(messages.clone(), process).unwrap()
            };
            let got: Vec<Journey> = processed
                .into_iter()
                .map(|p| {
                    let trace = p
                        .trace
                        .expect("traced")
                        .entries
                        .into_iter()
                        .map(|e| {
                            let noted = match e.event {
                                TraceEvent::Ran { outcome, attempts, .. } => {
                                    Noted::Ran(outcome, attempts)
                                }
                                TraceEvent::Skipped(why) => Noted::Skipped(match why {
                                    SkipReason::PipelineDisabled => Why::Disabled,
                                    SkipReason::NotSelected(_) => Why::NotSelected,
                                    SkipReason::EarlierFailure => Why::EarlierFailure,
                                    SkipReason::Dropped => Why::Dropped,
                                    other => panic!("a skip the reference has no reason for: {other:?}"),
                                }),
                                TraceEvent::Failed { kind, attempts, action, .. } => {
                                    Noted::Failed(kind, attempts, action)
                                }
                            };
                            (noted, e.circuit)
                        })
                        .collect();
                    let end = match p.disposition {
                        Disposition::Delivered(m) => End::Delivered(m),
                        Disposition::Dropped => End::Dropped,
                        Disposition::DeadLettered(mut letter) => {
                            // Its cause reads back (the headers themselves are
                            // compared with the reference's below).
                            if let Err(e) = DeadLetterCause::of(&letter) {
                                panic!("a dead letter whose cause does not read back: {e}: {letter:?}");
                            }
                            // The text for people is the engine's own.
                            letter.headers.set(dlq::ERROR, "");
                            End::DeadLettered(letter)
                        }
                    };
                    (end, trace)
                })
                .collect();
            prop_assert_eq!(got.len(), expected.len());
            for (i, (got, expected)) in got.iter().zip(&expected).enumerate() {
                prop_assert_eq!(
                    got, expected,
                    "message {} of {:?}{}\nconfiguration: {}\nmodules: {:?}",
                    i, messages, if on_this_thread { " on this thread" } else { "" }, text, does
                );
            }
        }
    }
}
