//! execution.md, rule by rule, with stand-in modules (plain Rust functions
//! behind the core contract: `rustmq-etl-testkit`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustmq_etl_config::{Config, Format};
use rustmq_etl_core::{Bytes, Edit, ErrorKind, Message, Outcome};
use rustmq_etl_orchestrator::{
    dead_letter_headers as dlq, Backoff, BreakerSettings, DeadLetterCause, Disposition,
    FailureAction, Options, Orchestrator, ProcessOptions, Processed, RanOutcome, SkipReason,
    TraceEvent,
};
use rustmq_etl_testkit::{Behaviour, StandIn};

fn config(yaml: &str) -> Config {
    Config::from_text(yaml, Format::Yaml, None)
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

fn no_bytes(_: &str) -> Result<Vec<u8>, String> {
    Ok(Vec::new())
}

/// Every retry waits `ms` (before jitter).
fn waits(ms: u64) -> Options {
    let delay = Duration::from_millis(ms);
    Options::default().backoff(Backoff::default().base(delay).factor(1).cap(delay))
}

/// Fast retries, so that the tests do not wait long.
fn options() -> Options {
    Options::default().backoff(
        Backoff::default()
            .base(Duration::from_millis(1))
            .factor(2)
            .cap(Duration::from_millis(4)),
    )
}

fn start(engine: &Arc<StandIn>, yaml: &str) -> Orchestrator<StandIn> {
    start_with(engine, yaml, options())
}

fn start_with(engine: &Arc<StandIn>, yaml: &str, options: Options) -> Orchestrator<StandIn> {
    Orchestrator::new(engine.clone(), &config(yaml), no_bytes, options).unwrap()
}

fn traced(o: &Orchestrator<StandIn>, messages: Vec<Message>) -> Vec<Processed> {
    o.process_batch_blocking(messages, ProcessOptions::default().trace(true))
        .unwrap()
}

fn one(o: &Orchestrator<StandIn>, message: Message) -> Processed {
    traced(o, vec![message]).remove(0)
}

fn delivered(p: &Processed) -> &Message {
    match &p.disposition {
        Disposition::Delivered(m) => m,
        other => panic!("expected delivery, got {other:?}\ntrace: {:#?}", p.trace),
    }
}

fn dead_letter(p: &Processed) -> &Message {
    match &p.disposition {
        Disposition::DeadLettered(m) => m,
        other => panic!(
            "expected a dead letter, got {other:?}\ntrace: {:#?}",
            p.trace
        ),
    }
}

fn events(p: &Processed) -> Vec<(String, TraceEvent)> {
    p.trace
        .as_ref()
        .expect("traced")
        .entries
        .iter()
        .map(|e| (e.module.clone(), e.event.clone()))
        .collect()
}

fn set_header(name: &'static str, value: &'static str) -> Behaviour {
    Behaviour::ok(Outcome::Edited(vec![Edit::SetHeader(
        name.into(),
        value.into(),
    )]))
}

/// A module's answer that moves the message to `topic`.
fn set_topic(topic: &'static str) -> Behaviour {
    Behaviour::ok(Outcome::Edited(vec![Edit::SetTopic(topic.into())]))
}

/// A module that appends its letter to the payload.
fn append(letter: &'static str) -> impl Fn(&Message) -> Behaviour {
    move |m: &Message| {
        let mut payload = m.payload.to_vec();
        payload.extend_from_slice(letter.as_bytes());
        Behaviour::ok(Outcome::Edited(vec![Edit::SetPayload(Bytes::from(
            payload,
        ))]))
    }
}

const SEQUENTIAL: &str = r#"
pipeline_id: p
stages:
  - priority: 0
    modules: [{module_id: a}, {module_id: b}]
  - priority: 1
    modules: [{module_id: c}]
"#;

#[test]
fn a_sequential_stage_passes_each_module_the_message_as_the_one_before_left_it() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("a", append("a"));
    engine.module("b", append("b"));
    engine.module("c", append("c"));
    let o = start(&engine, SEQUENTIAL);
    let out = one(&o, Message::new("t", ">"));
    assert_eq!(&delivered(&out).payload[..], b">abc");
    assert!(events(&out).iter().all(|(_, e)| matches!(
        e,
        TraceEvent::Ran {
            outcome: RanOutcome::Edited(1),
            attempts: 1,
            ..
        }
    )));
}

#[test]
fn a_drop_ends_the_journey_at_once() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("a", |_| Behaviour::ok(Outcome::Dropped));
    engine.module("b", append("b"));
    engine.module("c", append("c"));
    engine.module("later", append("!"));
    let yaml = format!(
        "pipelines:\n  - {}\n  - pipeline_id: q\n    stages: [{{priority: 0, modules: [{{module_id: later}}]}}]",
        SEQUENTIAL.trim().replace('\n', "\n    ")
    );
    let o = start(&engine, &yaml);
    let out = one(&o, Message::new("t", ">"));
    assert_eq!(out.disposition, Disposition::Dropped);
    let events = events(&out);
    assert!(matches!(
        events[0],
        (
            _,
            TraceEvent::Ran {
                outcome: RanOutcome::Dropped,
                ..
            }
        )
    ));
    for (module, event) in &events[1..] {
        assert_eq!(event, &TraceEvent::Skipped(SkipReason::Dropped), "{module}");
    }
    assert_eq!(
        events.len(),
        4,
        "every module of every pipeline is in the trace"
    );
}

/// A module listed twice in a stage with the same settings is one
/// occurrence run once for each listing (execution.md, "Modules and their
/// settings"): in a sequential stage the second listing sees the first's
/// result; in a parallel stage both see the stage's input and their edits
/// apply in turn. Each listing has its own trace entry.
#[test]
fn a_module_listed_twice_in_a_stage_runs_once_for_each_listing() {
    let engine = Arc::new(StandIn::new(2));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let calls = seen.clone();
    engine.module("a", move |m: &Message| {
        calls.lock().unwrap().push(m.payload.to_vec());
        append("a")(m)
    });
    let o = start(
        &engine,
        r#"
pipeline_id: p
stages:
  - priority: 0
    modules: [{module_id: a}, {module_id: a}]
  - priority: 1
    parallel_execution: true
    modules: [{module_id: a}, {module_id: a}]
"#,
    );
    let out = one(&o, Message::new("t", ">"));
    // ">" → ">a" → ">aa"; then both parallel listings see ">aa" and each
    // sets ">aaa": the later one's write is the last.
    assert_eq!(&delivered(&out).payload[..], b">aaa");
    let entries = &out.trace.as_ref().unwrap().entries;
    assert_eq!(entries.len(), 4);
    let indices: std::collections::BTreeSet<usize> = entries.iter().map(|e| e.index).collect();
    assert_eq!(indices.len(), 4, "each listing is an entry of its own");
    assert!(entries
        .iter()
        .all(|e| matches!(e.event, TraceEvent::Ran { attempts: 1, .. })));
    assert_eq!(
        *seen.lock().unwrap(),
        [&b">"[..], b">a", b">aa", b">aa"],
        "one occurrence, called once per listing"
    );
}

const PARALLEL: &str = r#"
pipeline_id: p
error_handling: StopPipeline
stages:
  - priority: 0
    parallel_execution: true
    modules: [{module_id: a}, {module_id: b}, {module_id: c}]
"#;

#[test]
fn a_parallel_stage_combines_results_in_declaration_order() {
    let engine = Arc::new(StandIn::new(2));
    // Each sees the stage's input; b's topic wins over a's (declared later);
    // c takes longer, and its edits still come last.
    engine.module("a", |m: &Message| {
        assert_eq!(m.topic, "in");
        Behaviour::ok(Outcome::Edited(vec![
            Edit::SetTopic("from-a".into()),
            Edit::SetHeader("a".into(), "1".into()),
        ]))
    });
    engine.module("b", |m: &Message| {
        assert_eq!(m.topic, "in");
        set_topic("from-b")
    });
    engine.module("c", |m: &Message| {
        assert!(m.headers.get("a").is_none(), "c sees the stage's input");
        set_header("a", "from-c").after(Duration::from_millis(20))
    });
    let o = start(&engine, PARALLEL);
    let out = one(&o, Message::new("in", ""));
    let m = delivered(&out);
    assert_eq!(m.topic, "from-b");
    assert_eq!(m.headers.get("a"), Some("from-c"));
    // Declared first, the slow module's edit comes first whenever it ends:
    // a's, declared after it, wins.
    let o = start(
        &engine,
        &PARALLEL.replace(
            "[{module_id: a}, {module_id: b}, {module_id: c}]",
            "[{module_id: c}, {module_id: a}, {module_id: b}]",
        ),
    );
    let out = one(&o, Message::new("in", ""));
    let m = delivered(&out);
    assert_eq!(m.topic, "from-b");
    assert_eq!(m.headers.get("a"), Some("1"));
}

#[test]
fn a_parallel_stage_drops_when_any_module_drops_but_a_failure_is_handled_first() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("a", |_| Behaviour::ok(Outcome::Dropped));
    engine.module("b", append("b"));
    engine.module("c", append("c"));
    let o = start(&engine, PARALLEL);
    assert_eq!(
        one(&o, Message::new("in", "")).disposition,
        Disposition::Dropped
    );

    // A failure under StopPipeline: the message leaves as it entered, the
    // drop before it notwithstanding.
    let engine = Arc::new(StandIn::new(2));
    engine.module("a", |_| Behaviour::ok(Outcome::Dropped));
    engine.module("b", |_| Behaviour::fail(ErrorKind::Trap, "boom"));
    engine.module("c", append("c"));
    let o = start(&engine, PARALLEL);
    let out = one(&o, Message::new("in", "x"));
    assert_eq!(&delivered(&out).payload[..], b"x");
}

/// A module that counts its calls and answers `behaviour`.
fn counted(
    calls: &Arc<AtomicUsize>,
    behaviour: impl Fn(&Message) -> Behaviour + Send + Sync + 'static,
) -> impl Fn(&Message) -> Behaviour + Send + Sync + 'static {
    let calls = calls.clone();
    move |m: &Message| {
        calls.fetch_add(1, Ordering::SeqCst);
        behaviour(m)
    }
}

/// In a parallel stage every selected module runs, whatever an earlier
/// declared one did; then the failures are handled in declaration order
/// (the first decides the dead letter) before anything is combined.
#[test]
fn a_parallel_stage_runs_every_module_before_a_failure_is_acted_on() {
    for (strategy, stopped) in [("StopPipeline", true), ("SendToDeadLetter", false)] {
        let engine = Arc::new(StandIn::new(2));
        let calls = Arc::new(AtomicUsize::new(0));
        engine.module(
            "a",
            counted(&calls, |_| {
                Behaviour::fail(ErrorKind::GuestError, "a says no")
            }),
        );
        engine.module("b", counted(&calls, append("b")));
        engine.module(
            "c",
            counted(&calls, |_| Behaviour::fail(ErrorKind::Trap, "c trapped")),
        );
        let o = start(&engine, &PARALLEL.replace("StopPipeline", strategy));
        let out = one(&o, Message::new("in", "x"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "{strategy}: every module ran"
        );
        let action = if stopped {
            assert_eq!(&delivered(&out).payload[..], b"x", "{strategy}");
            FailureAction::StoppedPipeline
        } else {
            let letter = dead_letter(&out);
            assert_eq!(&letter.payload[..], b"x");
            assert_eq!(letter.headers.get(dlq::MODULE), Some("a"));
            assert_eq!(letter.headers.get(dlq::ERROR_KIND), Some("guest_error"));
            FailureAction::DeadLettered
        };
        let events = events(&out);
        assert!(
            matches!(&events[0].1, TraceEvent::Failed { kind: ErrorKind::GuestError, action: a, .. } if *a == action),
            "{strategy}: {events:?}"
        );
        assert!(
            matches!(&events[1].1, TraceEvent::Ran { .. }),
            "{strategy}: {events:?}"
        );
        // c's failure decided nothing: a's, declared before it, had ended
        // the pipeline.
        assert!(
            matches!(
                &events[2].1,
                TraceEvent::Failed {
                    kind: ErrorKind::Trap,
                    action: FailureAction::EarlierFailure,
                    ..
                }
            ),
            "{strategy}: {events:?}"
        );
    }
}

/// A parallel stage's modules run one after another on the message's
/// thread and share the stage's budget, which bounds their time together:
/// once it is spent, the module running fails `stage_timeout` and those
/// after it are skipped, never called (execution.md: "the module running at
/// that moment fails"); the edits of those that ended in time are combined.
#[test]
fn a_parallel_stage_s_budget_bounds_its_modules_together() {
    let engine = Arc::new(StandIn::new(2));
    let calls = Arc::new(AtomicUsize::new(0));
    for name in ["a", "b", "c"] {
        engine.module(
            name,
            counted(&calls, move |_| {
                set_header(name, "1").after(Duration::from_millis(60))
            }),
        );
    }
    engine.module("stuck", |_| {
        set_header("never", "1").after(Duration::from_secs(5))
    });
    let yaml = r#"
pipeline_id: p
error_handling: SkipModule
stages:
  - priority: 0
    parallel_execution: true
    stage_timeout_ms: 200
    modules: [{module_id: a}, {module_id: b}, {module_id: stuck}, {module_id: c}]
"#;
    let o = start(&engine, yaml);
    let started = Instant::now();
    let out = one(&o, Message::new("in", ""));
    assert!(started.elapsed() < Duration::from_secs(2));
    let names: Vec<&str> = delivered(&out)
        .headers
        .iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, ["a", "b"], "{:?}", out.trace);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "c was not called");
    let events = events(&out);
    assert!(
        matches!(
            &events[2].1,
            TraceEvent::Failed {
                kind: ErrorKind::StageTimeout,
                action: FailureAction::EndedStage,
                attempts: 1,
                ..
            }
        ),
        "{events:?}"
    );
    skipped_for_earlier_failure(&events, 3, "c");
}

/// Asserts that the `i`-th module traced is `name`, skipped for an earlier
/// failure.
#[track_caller]
fn skipped_for_earlier_failure(events: &[(String, TraceEvent)], i: usize, name: &str) {
    assert_eq!(
        events[i],
        (
            name.to_owned(),
            TraceEvent::Skipped(SkipReason::EarlierFailure)
        ),
        "{events:?}"
    );
}

/// A stand-in engine with `edit` (appends "!"), `stuck` (answers after
/// five seconds) and `late` (appends "late"), and `late`'s calls.
fn edit_stuck_late() -> (Arc<StandIn>, Arc<AtomicUsize>) {
    let engine = Arc::new(StandIn::new(2));
    let late_calls = Arc::new(AtomicUsize::new(0));
    engine.module("edit", append("!"));
    engine.module("stuck", |_| {
        set_header("never", "1").after(Duration::from_secs(5))
    });
    engine.module("late", counted(&late_calls, append("late")));
    (engine, late_calls)
}

/// A pipeline timeout in a parallel stage under SkipModule ends the pipeline
/// with the message as it stood when the stage began: the failure is handled
/// before anything is combined, so the stage's edits and drops are not. The
/// stage's modules not yet called when the time ran out are skipped.
#[test]
fn a_pipeline_timeout_in_a_parallel_stage_delivers_the_stage_s_input() {
    let (engine, late_calls) = edit_stuck_late();
    engine.module("drop", |_| Behaviour::ok(Outcome::Dropped));
    engine.module("after", append("?"));
    let yaml = r#"
pipeline_id: p
error_handling: SkipModule
global_timeout_ms: 100
stages:
  - priority: 0
    parallel_execution: true
    modules: [{module_id: edit}, {module_id: drop}, {module_id: stuck}, {module_id: late}]
  - priority: 1
    modules: [{module_id: after}]
"#;
    let o = start(&engine, yaml);
    let out = one(&o, Message::new("in", "x"));
    assert_eq!(&delivered(&out).payload[..], b"x", "{:?}", out.trace);
    assert_eq!(late_calls.load(Ordering::SeqCst), 0, "late was not called");
    let events = events(&out);
    assert!(
        matches!(
            &events[2].1,
            TraceEvent::Failed {
                kind: ErrorKind::PipelineTimeout,
                action: FailureAction::EndedPipeline,
                ..
            }
        ),
        "{events:?}"
    );
    skipped_for_earlier_failure(&events, 3, "late");
    skipped_for_earlier_failure(&events, 4, "after");
}

/// A stage timeout in a parallel stage under SendToDeadLetter: the module
/// running when the time ran out makes the dead letter (called once); the
/// one after it is skipped, never called, and counts no error.
#[test]
fn a_stage_timeout_in_a_parallel_stage_dead_letters_the_module_running() {
    let (engine, late_calls) = edit_stuck_late();
    let yaml = r#"
pipeline_id: p
error_handling: SendToDeadLetter
stages:
  - priority: 0
    parallel_execution: true
    stage_timeout_ms: 100
    modules: [{module_id: edit}, {module_id: stuck}, {module_id: late}]
"#;
    let o = start(&engine, yaml);
    let out = one(&o, Message::new("in", "x"));
    let letter = dead_letter(&out);
    assert_eq!(&letter.payload[..], b"x", "the message as it entered");
    for (name, value) in [
        (dlq::MODULE, "stuck"),
        (dlq::ERROR_KIND, "stage_timeout"),
        (dlq::ATTEMPTS, "1"),
    ] {
        assert_eq!(letter.headers.get(name), Some(value), "{name}");
    }
    assert_eq!(late_calls.load(Ordering::SeqCst), 0, "late was not called");
    skipped_for_earlier_failure(&events(&out), 2, "late");
    let text = scraped(&o);
    // Every module's series is there, each kind at 0 but the one error.
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("rustmq_etl_module_errors_total") && !l.ends_with(" 0"))
        .collect();
    assert_eq!(
        errors,
        [r#"rustmq_etl_module_errors_total{pipeline="p",module="stuck",kind="stage_timeout"} 1"#],
        "{text}"
    );
    let zeros = text
        .lines()
        .filter(|l| l.starts_with("rustmq_etl_module_errors_total{") && l.ends_with(" 0"))
        .count();
    assert_eq!(zeros, 3 * 9 - 1, "{text}");
}

#[test]
fn pipelines_chain_and_a_new_topic_changes_what_later_filters_see() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("rename", |_| set_topic("renamed"));
    engine.module("on-old", |_| set_header("old", "yes"));
    engine.module("on-new", |_| set_header("new", "yes"));
    let yaml = r#"
pipelines:
  - pipeline_id: first
    stages:
      - priority: 0
        modules: [{module_id: rename}]
      - priority: 1
        modules:
          - {module_id: on-old, topic_filters: [{filter_type: Exact, pattern: original}]}
          - {module_id: on-new, topic_filters: [{filter_type: Exact, pattern: renamed}]}
  - pipeline_id: second
    stages:
      - priority: 0
        modules:
          - {module_id: on-old, topic_filters: [{filter_type: Exact, pattern: original}]}
"#;
    let o = start(&engine, yaml);
    let out = one(&o, Message::new("original", ""));
    let m = delivered(&out);
    assert_eq!(m.topic, "renamed");
    assert_eq!(m.headers.get("new"), Some("yes"));
    assert_eq!(m.headers.get("old"), None);
    let skipped: Vec<_> = events(&out)
        .into_iter()
        .filter(|(_, e)| matches!(e, TraceEvent::Skipped(SkipReason::NotSelected(_))))
        .map(|(m, _)| m)
        .collect();
    assert_eq!(skipped, ["on-old", "on-old"]);
    // Why, by default; with `skip_reasons(false)`, the same events without
    // the texts (what `rustmq-etl run`'s summary needs).
    let reasons = |out: &Processed| -> Vec<String> {
        events(out)
            .into_iter()
            .filter_map(|(_, e)| match e {
                TraceEvent::Skipped(SkipReason::NotSelected(why)) => Some(why),
                _ => None,
            })
            .collect()
    };
    assert!(
        reasons(&out)
            .iter()
            .all(|why| why.contains("no topic filter accepts topic \"renamed\"")),
        "{:?}",
        reasons(&out)
    );
    let brief = o
        .process_batch_blocking(
            vec![Message::new("original", "")],
            ProcessOptions::default().trace(true).skip_reasons(false),
        )
        .unwrap()
        .remove(0);
    assert_eq!(reasons(&brief), ["", ""]);
    assert_eq!(brief.disposition, out.disposition);
}

#[test]
fn messages_of_a_batch_on_the_same_or_other_topics_are_each_selected_by_their_own() {
    // An engine thread keeps the filters' verdict for the last topic it
    // evaluated, and a topic change re-evaluates only the rules of the
    // modules the new topic lets in. A batch that goes back and forth between
    // topics (and repeats them), and messages whose topic a module changes,
    // must each be selected by the topic and payload they have at the time.
    // Without a trace (the fast path) and with.
    let engine = Arc::new(StandIn::new(1));
    engine.module("move-to-b", |_| set_topic("b"));
    for name in ["on-a", "on-b", "on-a-or-b"] {
        engine.module(name, move |_| set_header(name, "1"));
    }
    let yaml = r#"
pipelines:
  - pipeline_id: first
    stages:
      - priority: 0
        modules:
          - {module_id: on-a, topic_filters: [{filter_type: Exact, pattern: a}]}
          - module_id: move-to-b
            topic_filters: [{filter_type: Exact, pattern: a}]
            conditional_rules: [{condition_type: PayloadField, field_path: $.move, operator: Equals, value: "yes"}]
  - pipeline_id: second
    stages:
      - priority: 0
        modules:
          - {module_id: on-b, topic_filters: [{filter_type: Exact, pattern: b}]}
          - module_id: on-a-or-b
            topic_filters: [{filter_type: Regex, pattern: "^(a|b)$"}]
            conditional_rules: [{condition_type: PayloadField, field_path: $.tag, operator: Equals, value: x}]
"#;
    // (topic, move, tag) -> (topic after, on-a, on-b, on-a-or-b)
    let cases = [
        (("a", "yes", "x"), ("b", true, true, true)),
        (("a", "no", "x"), ("a", true, false, true)),
        (("a", "no", "y"), ("a", true, false, false)),
        (("a", "no", "x"), ("a", true, false, true)),
        (("b", "yes", "x"), ("b", false, true, true)),
        (("c", "yes", "x"), ("c", false, false, false)),
        (("c", "no", "y"), ("c", false, false, false)),
        (("a", "yes", "y"), ("b", true, true, false)),
        (("b", "no", "y"), ("b", false, true, false)),
        (("b", "no", "x"), ("b", false, true, true)),
    ];
    for trace in [false, true] {
        let o = start(&engine, yaml);
        let messages = cases
            .iter()
            .map(|((topic, go, tag), _)| {
                Message::new(*topic, format!(r#"{{"move":"{go}","tag":"{tag}"}}"#))
            })
            .collect();
        let out = o
            .process_batch_blocking(messages, ProcessOptions::default().trace(trace))
            .unwrap();
        for ((input, expected), p) in cases.iter().zip(&out) {
            let m = delivered(p);
            let seen = (
                m.topic.as_str(),
                m.headers.get("on-a").is_some(),
                m.headers.get("on-b").is_some(),
                m.headers.get("on-a-or-b").is_some(),
            );
            assert_eq!(seen, *expected, "{input:?} (trace: {trace})");
        }
    }
}

#[test]
fn a_reload_that_changes_a_topic_s_filters_is_seen_by_the_next_message_on_it() {
    // One engine thread: the verdict it kept for topic `t` belongs to the
    // configuration it was evaluated on.
    let engine = Arc::new(StandIn::new(1));
    engine.module("m", |_| set_header("m", "1"));
    let yaml = |pattern: &str| {
        format!(
            "pipeline_id: p\nstages:\n  - {{priority: 0, modules: [{{module_id: m, topic_filters: [{{filter_type: Exact, pattern: {pattern}}}]}}]}}\n"
        )
    };
    let o = start(&engine, &yaml("t"));
    let ran = |o: &Orchestrator<StandIn>| {
        let out = o
            .process_batch_blocking(vec![Message::new("t", ""); 2], ProcessOptions::default())
            .unwrap();
        out.iter()
            .map(|p| delivered(p).headers.get("m").is_some())
            .collect::<Vec<_>>()
    };
    assert_eq!(ran(&o), [true, true]);
    o.reload(&config(&yaml("u"))).unwrap();
    assert_eq!(ran(&o), [false, false]);
    o.reload(&config(&yaml("t"))).unwrap();
    assert_eq!(ran(&o), [true, true]);
}

#[test]
fn a_module_the_topic_reaches_only_after_a_move_is_judged_by_its_rules_then() {
    // Rules are evaluated only for modules whose filters accept the topic:
    // `gated` is out for topic `a` (its rules not evaluated), and in once
    // `move` makes the topic `b`; its payload rule must then be evaluated.
    let engine = Arc::new(StandIn::new(1));
    engine.module("move", |_| set_topic("b"));
    engine.module("gated", |_| set_header("gated", "1"));
    let yaml = r#"
pipelines:
  - pipeline_id: first
    stages:
      - priority: 0
        modules: [{module_id: move, topic_filters: [{filter_type: Exact, pattern: a}]}]
  - pipeline_id: second
    stages:
      - priority: 0
        modules:
          - module_id: gated
            topic_filters: [{filter_type: Exact, pattern: b}]
            conditional_rules: [{condition_type: PayloadField, field_path: $.go, operator: Equals, value: "yes"}]
"#;
    let cases = [
        ("a", r#"{"go":"yes"}"#, true),
        ("a", r#"{"go":"no"}"#, false),
        ("b", r#"{"go":"yes"}"#, true),
        ("c", r#"{"go":"yes"}"#, false),
        ("a", r#"{"go":"yes"}"#, true),
    ];
    for trace in [false, true] {
        let o = start(&engine, yaml);
        let out = o
            .process_batch_blocking(
                cases.iter().map(|(t, p, _)| Message::new(*t, *p)).collect(),
                ProcessOptions::default().trace(trace),
            )
            .unwrap();
        for ((topic, payload, runs), p) in cases.iter().zip(&out) {
            assert_eq!(
                delivered(p).headers.get("gated").is_some(),
                *runs,
                "{topic} {payload} (trace: {trace})"
            );
        }
    }
}

#[test]
fn a_payload_edit_after_a_topic_change_has_every_rule_evaluated_again() {
    // `tagged` is let in by both topics; the topic change keeps its rules'
    // verdict (false: tag y), the payload edit after it must not.
    let engine = Arc::new(StandIn::new(1));
    engine.module("move", |_| set_topic("b"));
    engine.module("retag", |_| {
        Behaviour::ok(Outcome::Edited(vec![Edit::SetPayload(Bytes::from_static(
            br#"{"tag":"x"}"#,
        ))]))
    });
    engine.module("tagged", |_| set_header("tagged", "1"));
    let yaml = r#"
pipelines:
  - pipeline_id: first
    stages:
      - {priority: 0, modules: [{module_id: move, topic_filters: [{filter_type: Exact, pattern: a}]}]}
      - {priority: 1, modules: [{module_id: retag, topic_filters: [{filter_type: Exact, pattern: b}]}]}
  - pipeline_id: second
    stages:
      - priority: 0
        modules:
          - module_id: tagged
            topic_filters: [{filter_type: Regex, pattern: "^(a|b)$"}]
            conditional_rules: [{condition_type: PayloadField, field_path: $.tag, operator: Equals, value: x}]
"#;
    for trace in [false, true] {
        let o = start(&engine, yaml);
        let out = o
            .process_batch_blocking(
                vec![Message::new("a", r#"{"tag":"y"}"#)],
                ProcessOptions::default().trace(trace),
            )
            .unwrap();
        let m = delivered(&out[0]);
        assert_eq!(m.topic, "b");
        assert_eq!(&m.payload[..], br#"{"tag":"x"}"#);
        assert_eq!(m.headers.get("tagged"), Some("1"), "trace: {trace}");
    }
}

#[test]
fn selection_is_decided_on_the_message_as_it_reaches_the_stage() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("mark", |_| set_header("x-mark", "1"));
    engine.module("needs-mark", |_| set_header("x-seen", "1"));
    let yaml = r#"
pipeline_id: p
stages:
  - priority: 0
    modules: [{module_id: mark}]
  - priority: 1
    modules:
      - module_id: needs-mark
        conditional_rules:
          - {condition_type: HeaderValue, field_path: x-mark, operator: Equals, value: "1"}
"#;
    let o = start(&engine, yaml);
    assert_eq!(
        delivered(&one(&o, Message::new("t", "")))
            .headers
            .get("x-seen"),
        Some("1")
    );
}

/// Every kind of edit, against the one kind of rule (or filter) that reads
/// what it changes, alone in its plan: the later selection must see the
/// edit, whether the editing stage runs in turn or in parallel, and in the
/// next pipeline. (Age rules are evaluated afresh at every stage; their cases
/// check that a timestamp edit is seen all the same.)
#[test]
fn a_later_selection_sees_every_kind_of_edit_its_rules_read() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let with_header = |value: &str| {
        let mut m = Message::new("a", "");
        m.headers.push("h", value);
        m
    };
    let with_key = {
        let mut m = Message::new("a", "");
        m.key = Some(Bytes::from_static(b"123456"));
        m
    };
    let with_timestamp = {
        let mut m = Message::new("a", "");
        m.timestamp_ms = Some(now);
        m
    };
    let size = "{condition_type: MessageSize, field_path: '', operator: GreaterThan, value: 5}";
    let header = "{condition_type: HeaderValue, field_path: h, operator: Equals, value: '1'}";
    let age = "{condition_type: MessageAge, field_path: '', operator: LessThan, value: 60000}";
    let field = "{condition_type: PayloadField, field_path: $.a, operator: Equals, value: 1}";
    // (what the case shows, the message, the editing module's edits, the
    // later module's selection settings, whether it runs after the edits)
    let cases: Vec<(&str, Message, Vec<Edit>, String, bool)> = vec![
        (
            "a new payload has the field",
            Message::new("a", "{}"),
            vec![Edit::SetPayload(Bytes::from_static(br#"{"a":1}"#))],
            format!("conditional_rules: [{field}]"),
            true,
        ),
        (
            "a new payload lacks the field",
            Message::new("a", r#"{"a":1}"#),
            vec![Edit::SetPayload(Bytes::from_static(b"{}"))],
            format!("conditional_rules: [{field}]"),
            false,
        ),
        (
            // A later edit of what no rule reads leaves the payload's stale.
            "a new payload, then a key",
            Message::new("a", "{}"),
            vec![
                Edit::SetPayload(Bytes::from_static(br#"{"a":1}"#)),
                Edit::SetKey(Bytes::from_static(b"k")),
            ],
            format!("conditional_rules: [{field}]"),
            true,
        ),
        (
            "a new payload grows the message",
            Message::new("a", "{}"),
            vec![Edit::SetPayload(Bytes::from_static(br#"{"a":1}"#))],
            format!("conditional_rules: [{size}]"),
            true,
        ),
        (
            "a header is set",
            Message::new("a", ""),
            vec![Edit::SetHeader("h".into(), "1".into())],
            format!("conditional_rules: [{header}]"),
            true,
        ),
        (
            "a header is removed",
            with_header("1"),
            vec![Edit::RemoveHeader("h".into())],
            format!("conditional_rules: [{header}]"),
            false,
        ),
        (
            "a header grows the message",
            Message::new("a", ""),
            vec![Edit::SetHeader("h".into(), "123456".into())],
            format!("conditional_rules: [{size}]"),
            true,
        ),
        (
            "a removed header shrinks the message",
            with_header("123456"),
            vec![Edit::RemoveHeader("h".into())],
            format!("conditional_rules: [{size}]"),
            false,
        ),
        (
            "a key grows the message",
            Message::new("a", ""),
            vec![Edit::SetKey(Bytes::from_static(b"123456"))],
            format!("conditional_rules: [{size}]"),
            true,
        ),
        (
            "a cleared key shrinks the message",
            with_key,
            vec![Edit::ClearKey],
            format!("conditional_rules: [{size}]"),
            false,
        ),
        (
            "a timestamp gives the message an age",
            Message::new("a", ""),
            vec![Edit::SetTimestamp(now)],
            format!("conditional_rules: [{age}]"),
            true,
        ),
        (
            "a cleared timestamp takes the age away",
            with_timestamp,
            vec![Edit::ClearTimestamp],
            format!("conditional_rules: [{age}]"),
            false,
        ),
        (
            "a new topic passes the filter",
            Message::new("a", ""),
            vec![Edit::SetTopic("b".into())],
            "topic_filters: [{filter_type: Exact, pattern: b}]".to_owned(),
            true,
        ),
    ];
    for (what, message, edits, selection, runs_after) in cases {
        for layout in ["in turn", "in parallel", "in the next pipeline"] {
            let engine = Arc::new(StandIn::new(2));
            let made = edits.clone();
            engine.module("edit", move |_| {
                Behaviour::ok(Outcome::Edited(made.clone()))
            });
            engine.module("other", |_| Behaviour::ok(Outcome::Unchanged));
            engine.module("after", |_| set_header("x-after", "1"));
            let editing = "modules: [{module_id: edit}, {module_id: other}]";
            let after = format!("modules: [{{module_id: after, {selection}}}]");
            let yaml = match layout {
                "in the next pipeline" => format!(
                    "pipelines:\n  - pipeline_id: p\n    stages: [{{priority: 0, {editing}}}]\n  - pipeline_id: q\n    stages: [{{priority: 0, {after}}}]\n"
                ),
                _ => format!(
                    "pipeline_id: p\nstages:\n  - {{priority: 0, parallel_execution: {}, {editing}}}\n  - {{priority: 1, {after}}}\n",
                    layout == "in parallel"
                ),
            };
            let o = start(&engine, &yaml);
            let processed = o
                .process_batch_blocking(vec![message.clone()], ProcessOptions::default())
                .unwrap()
                .remove(0);
            let ran = delivered(&processed).headers.get("x-after") == Some("1");
            assert_eq!(ran, runs_after, "{what} ({layout})");
        }
    }
}

/// How many selections the orchestrator has evaluated, by its metrics.
fn selections(o: &Orchestrator<StandIn>) -> u64 {
    let text = scraped(o);
    text.lines()
        .find_map(|l| l.strip_prefix("rustmq_etl_selection_duration_seconds_count "))
        .unwrap_or_else(|| panic!("no selection count in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn an_edit_no_rule_reads_does_not_evaluate_the_selection_again() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("mark", |_| set_header("x-mark", "1"));
    engine.module("converter", |_| set_header("x-converted", "1"));
    let yaml = |rule: &str| {
        format!(
            "pipeline_id: p\nstages:\n  - {{priority: 0, modules: [{{module_id: mark}}]}}\n  - {{priority: 1, modules: [{{module_id: converter, conditional_rules: [{rule}]}}]}}\n"
        )
    };
    let payload_rule =
        "{condition_type: PayloadField, field_path: $.unit, operator: Equals, value: celsius}";
    let header_rule =
        "{condition_type: HeaderValue, field_path: x-mark, operator: Equals, value: '1'}";
    // Rules that read only the payload: the header edit leaves the first
    // selection standing. A rule that reads headers: evaluated again.
    for (rule, per_message) in [(payload_rule, 1), (header_rule, 2)] {
        let o = start(&engine, &yaml(rule));
        let out = o
            .process_batch_blocking(
                vec![Message::new("t", r#"{"unit":"celsius"}"#); 3],
                ProcessOptions::default(),
            )
            .unwrap();
        for p in &out {
            assert_eq!(delivered(p).headers.get("x-converted"), Some("1"), "{rule}");
        }
        assert_eq!(selections(&o), 3 * per_message, "{rule}");
    }
}

/// The orchestrator's metrics in Prometheus text, published to a recorder
/// of their own.
fn scraped(o: &Orchestrator<StandIn>) -> String {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || o.publish_metrics());
    handle.render()
}

/// Every line of the orchestrator's metrics that counts messages (in all
/// and by pipeline), module calls, errors, retries and dead letters, stage
/// times and selections.
fn pipeline_and_call_counts(o: &Orchestrator<StandIn>) -> Vec<String> {
    let mut lines: Vec<String> = scraped(o)
        .lines()
        .filter(|l| {
            l.starts_with("rustmq_etl_pipeline_messages_total{")
                || l.starts_with("rustmq_etl_messages_total{")
                || l.starts_with("rustmq_etl_module_calls_total{")
                || l.starts_with("rustmq_etl_module_errors_total{")
                || l.starts_with("rustmq_etl_module_retries_total{")
                || l.starts_with("rustmq_etl_dead_letters_total{")
                || l.starts_with("rustmq_etl_stage_duration_seconds_count{")
                || l.starts_with("rustmq_etl_selection_duration_seconds_count")
        })
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// A stage's time, and its pipeline's, are recorded however the stage ends
/// for a message: in turn, by a drop, by a stopped pipeline or by a dead
/// letter (after its retries' waits), each once; and the counters of the
/// messages' ends, the module's calls, errors, retries and dead letters
/// agree with what happened, under each strategy.
#[test]
fn a_stage_s_time_is_recorded_however_it_ends() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("m", |m: &Message| match &m.payload[..] {
        b"drop" => Behaviour::ok(Outcome::Dropped),
        b"fail" => Behaviour::fail(ErrorKind::Trap, "no"),
        _ => Behaviour::ok(Outcome::Unchanged),
    });
    for (strategy, parallel) in [
        ("StopPipeline", false),
        ("RetryWithBackoff", false),
        ("StopPipeline", true),
        ("SendToDeadLetter", true),
    ] {
        let yaml = format!(
            "pipeline_id: p\nerror_handling: {strategy}\nmax_retries: 1\nstages: [{{priority: 0, parallel_execution: {parallel}, modules: [{{module_id: m}}]}}]"
        );
        let o = start(&engine, &yaml);
        let messages = ["ok", "drop", "fail"]
            .map(|p| Message::new("t", p))
            .to_vec();
        o.process_batch_blocking(messages, ProcessOptions::default())
            .unwrap();
        let text = scraped(&o);
        // What became of each message, and the module's calls: one drop,
        // one failure (tried twice when retried), as the strategy has it.
        let retried = strategy == "RetryWithBackoff";
        let stopped = strategy == "StopPipeline";
        let (failed, delivered) = (if retried { 2 } else { 1 }, if stopped { 2 } else { 1 });
        let dead = u32::from(!stopped);
        let counts = [
            (
                r#"rustmq_etl_stage_duration_seconds_count{pipeline="p",priority="0"}"#,
                3,
            ),
            (
                r#"rustmq_etl_pipeline_duration_seconds_count{pipeline="p"}"#,
                3,
            ),
            (r#"rustmq_etl_messages_total{result="dropped"}"#, 1),
            (
                r#"rustmq_etl_messages_total{result="delivered"}"#,
                delivered,
            ),
            (r#"rustmq_etl_messages_total{result="dead_lettered"}"#, dead),
            (
                r#"rustmq_etl_pipeline_messages_total{pipeline="p",result="processed"}"#,
                3,
            ),
            (
                r#"rustmq_etl_pipeline_messages_total{pipeline="p",result="dropped"}"#,
                1,
            ),
            (
                r#"rustmq_etl_pipeline_messages_total{pipeline="p",result="stopped"}"#,
                u32::from(stopped),
            ),
            (
                r#"rustmq_etl_pipeline_messages_total{pipeline="p",result="dead_lettered"}"#,
                dead,
            ),
            (
                r#"rustmq_etl_module_calls_total{pipeline="p",module="m",outcome="unchanged"}"#,
                1,
            ),
            (
                r#"rustmq_etl_module_calls_total{pipeline="p",module="m",outcome="dropped"}"#,
                1,
            ),
            (
                r#"rustmq_etl_module_calls_total{pipeline="p",module="m",outcome="failed"}"#,
                failed,
            ),
            // Every failed call is an error, a retried one too.
            (
                r#"rustmq_etl_module_errors_total{pipeline="p",module="m",kind="trap"}"#,
                failed,
            ),
            (
                r#"rustmq_etl_module_retries_total{pipeline="p",module="m"}"#,
                u32::from(retried),
            ),
            (
                r#"rustmq_etl_dead_letters_total{pipeline="p",module="m",kind="trap"}"#,
                dead,
            ),
        ]
        .map(|(series, n): (&str, u32)| format!("{series} {n}"));
        for line in &counts {
            assert!(
                text.lines().any(|l| l == line),
                "{strategy}, parallel {parallel}: {line} not in\n{text}"
            );
        }
    }
}

/// A pipeline's time is a sample only for messages it selected a module for:
/// one that selects none records none, whether it is walked (the first of a
/// journey, or traced) or passed over (a later one).
#[test]
fn a_pipeline_that_selects_nothing_records_no_time() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("m", |_| Behaviour::ok(Outcome::Unchanged));
    let yaml = r#"
pipelines:
  - pipeline_id: a
    stages: [{priority: 0, modules: [{module_id: m, topic_filters: [{filter_type: Exact, pattern: x}]}]}]
  - pipeline_id: b
    stages: [{priority: 0, modules: [{module_id: m, topic_filters: [{filter_type: Exact, pattern: x}]}]}]
  - pipeline_id: c
    stages: [{priority: 0, modules: [{module_id: m}]}]
"#;
    for trace in [false, true] {
        let o = start(&engine, yaml);
        let messages = vec![Message::new("t", ""); 3];
        o.process_batch_blocking(messages, ProcessOptions::default().trace(trace))
            .unwrap();
        let text = scraped(&o);
        let count = |pipeline: &str| {
            let series =
                format!(r#"rustmq_etl_pipeline_duration_seconds_count{{pipeline="{pipeline}"}} "#);
            text.lines()
                .find_map(|l| l.strip_prefix(&series)?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        assert_eq!(
            [count("a"), count("b"), count("c")],
            [0, 0, 3],
            "trace {trace}:\n{text}"
        );
    }
}

/// Runs `messages` through `yaml` without a trace (pipelines that select
/// nothing may be passed over) and with one (every stage is walked), each
/// time on a new orchestrator, `check`ing the results; the two runs' counts
/// (`pipeline_and_call_counts`) must be equal, and are returned.
fn counted_alike_with_or_without_a_trace(
    engine: &Arc<StandIn>,
    yaml: &str,
    messages: impl Fn() -> Vec<Message>,
    check: impl Fn(&[Processed], bool),
) -> Vec<String> {
    let mut counts = Vec::new();
    for trace in [false, true] {
        let o = start(engine, yaml);
        let out = o
            .process_batch_blocking(messages(), ProcessOptions::default().trace(trace))
            .unwrap();
        check(&out, trace);
        counts.push(pipeline_and_call_counts(&o));
    }
    assert_eq!(counts[0], counts[1], "counts without and with a trace");
    counts.remove(0)
}

/// Whether `counts` holds `line`.
fn assert_counted(counts: &[String], line: &str) {
    assert!(counts.iter().any(|l| l == line), "{line} in {counts:#?}");
}

#[test]
fn a_pipeline_that_selects_nothing_still_counts_each_message_processed_and_delivered() {
    // `between` selects none of its modules for topic `t`, unless the
    // pipeline before moves the message to topic `other`. No rule reads the
    // header `first` sets, so a message it does not move reaches `between`
    // with its selection standing.
    let engine = Arc::new(StandIn::new(1));
    engine.module("mark", |_| set_header("x-mark", "1"));
    engine.module("move", |m: &Message| {
        if m.payload.as_ref() == b"move" {
            set_topic("other")
        } else {
            Behaviour::ok(Outcome::Unchanged)
        }
    });
    engine.module("never-a", |_| set_header("x-never", "a"));
    engine.module("never-b", |_| set_header("x-never", "b"));
    engine.module("after", |_| set_header("x-after", "1"));
    let other = "topic_filters: [{filter_type: Exact, pattern: other}]";
    let yaml = format!(
        "pipelines:\n\
         - pipeline_id: first\n  stages: [{{priority: 0, modules: [{{module_id: mark}}, {{module_id: move}}]}}]\n\
         - pipeline_id: between\n  stages:\n  - {{priority: 0, modules: [{{module_id: never-a, {other}}}]}}\n  - {{priority: 1, modules: [{{module_id: never-b, {other}}}]}}\n\
         - pipeline_id: last\n  stages: [{{priority: 0, modules: [{{module_id: after}}]}}]\n"
    );
    let messages = || {
        vec![
            Message::new("t", "stay"),
            Message::new("t", "move"),
            Message::new("t", "stay"),
        ]
    };
    // The same counts whether the stages of `between` were walked (a trace
    // lists each skipped module) or passed over.
    let counts = counted_alike_with_or_without_a_trace(&engine, &yaml, messages, |out, trace| {
        for (p, moved) in out.iter().zip([false, true, false]) {
            let m = delivered(p);
            assert_eq!(m.headers.get("x-mark"), Some("1"), "trace {trace}");
            assert_eq!(m.headers.get("x-after"), Some("1"), "trace {trace}");
            // The moved message meets `between`'s filters: both stages run.
            let never = moved.then_some("b");
            assert_eq!(m.headers.get("x-never"), never, "trace {trace}");
        }
        if trace {
            let skipped = events(&out[0])
                .iter()
                .filter(|(_, e)| matches!(e, TraceEvent::Skipped(SkipReason::NotSelected(_))))
                .count();
            assert_eq!(
                skipped, 2,
                "`between`'s two modules, listed as not selected"
            );
        }
    });
    for line in [
        r#"rustmq_etl_pipeline_messages_total{pipeline="between",result="processed"} 3"#,
        r#"rustmq_etl_pipeline_messages_total{pipeline="between",result="delivered"} 3"#,
        r#"rustmq_etl_module_calls_total{pipeline="between",module="never-a",outcome="edited"} 1"#,
        // Only the moved message's stages in `between` ran a module.
        r#"rustmq_etl_stage_duration_seconds_count{pipeline="between",priority="0"} 1"#,
        r#"rustmq_etl_stage_duration_seconds_count{pipeline="between",priority="1"} 1"#,
        r#"rustmq_etl_stage_duration_seconds_count{pipeline="last",priority="0"} 3"#,
        // Each message's first selection, and the moved one's again.
        "rustmq_etl_selection_duration_seconds_count 4",
    ] {
        assert_counted(&counts, line);
    }
}

#[test]
fn a_pipeline_of_more_modules_than_fit_a_machine_word_pair_is_passed_over_alike() {
    // `wide`'s 140 modules (numbered 1 to 140 in the plan, past the 128 kept
    // inline) take topic `other` only: a message sent there, or moved there
    // by `first`, runs them; another passes `wide` over.
    let engine = Arc::new(StandIn::new(1));
    engine.module("move", |_| set_topic("other"));
    engine.module("w", |_| set_header("x-wide", "1"));
    engine.module("after", |_| set_header("x-after", "1"));
    let mut yaml = String::from("pipelines:\n- pipeline_id: first\n  stages: [{priority: 0, modules: [{module_id: move, topic_filters: [{filter_type: Exact, pattern: go}]}]}]\n- pipeline_id: wide\n  stages:\n  - priority: 0\n    modules:\n");
    for i in 0..140 {
        yaml.push_str(&format!(
            "      - {{module_id: w, instance_config: {{custom_config: {i}}}, topic_filters: [{{filter_type: Exact, pattern: other}}]}}\n"
        ));
    }
    yaml.push_str(
        "- pipeline_id: last\n  stages: [{priority: 0, modules: [{module_id: after}]}]\n",
    );
    let messages = || {
        vec![
            Message::new("stay", ""),
            Message::new("go", ""),
            Message::new("other", ""),
        ]
    };
    let counts = counted_alike_with_or_without_a_trace(&engine, &yaml, messages, |out, _| {
        assert_eq!(delivered(&out[0]).headers.get("x-wide"), None);
        assert_eq!(delivered(&out[1]).headers.get("x-wide"), Some("1"));
        assert_eq!(delivered(&out[2]).headers.get("x-wide"), Some("1"));
        for p in out {
            assert_eq!(delivered(p).headers.get("x-after"), Some("1"));
        }
    });
    assert_counted(
        &counts,
        r#"rustmq_etl_pipeline_messages_total{pipeline="wide",result="delivered"} 3"#,
    );
}

#[test]
fn selection_holds_for_more_modules_than_fit_a_machine_word_pair() {
    // 150 modules (past the 128 kept inline): the even ones take topic
    // `even`, the odd ones `odd`; each appends its number.
    let engine = Arc::new(StandIn::new(2));
    let mut yaml = String::from("pipeline_id: p\nstages:\n  - priority: 0\n    modules:\n");
    for i in 0..150 {
        let id = format!("m{i}");
        engine.module(&id, move |m: &Message| {
            let mut payload = m.payload.to_vec();
            payload.extend_from_slice(format!("{i},").as_bytes());
            Behaviour::ok(Outcome::Edited(vec![Edit::SetPayload(Bytes::from(
                payload,
            ))]))
        });
        let topic = if i % 2 == 0 { "even" } else { "odd" };
        yaml.push_str(&format!(
            "      - {{module_id: {id}, topic_filters: [{{filter_type: Exact, pattern: {topic}}}]}}\n"
        ));
    }
    let o = start(&engine, &yaml);
    for (topic, first) in [("even", 0), ("odd", 1)] {
        let out = one(&o, Message::new(topic, ""));
        let expected: String = (first..150).step_by(2).map(|i| format!("{i},")).collect();
        assert_eq!(
            std::str::from_utf8(&delivered(&out).payload).unwrap(),
            expected
        );
        let skipped = events(&out)
            .iter()
            .filter(|(_, e)| matches!(e, TraceEvent::Skipped(SkipReason::NotSelected(_))))
            .count();
        assert_eq!(skipped, 75);
    }
}

fn flaky(fails: u32, kind: ErrorKind) -> impl Fn(&Message) -> Behaviour {
    let calls = Arc::new(AtomicU32::new(0));
    move |_: &Message| {
        if calls.fetch_add(1, Ordering::SeqCst) < fails {
            Behaviour::fail(kind, "flaky")
        } else {
            set_header("ok", "1")
        }
    }
}

const RETRIED: &str = r#"
pipeline_id: p
error_handling: RetryWithBackoff
max_retries: 2
stages:
  - priority: 3
    modules: [{module_id: m}]
"#;

#[test]
fn retry_with_backoff_calls_again_and_a_later_success_is_no_failure() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("m", flaky(2, ErrorKind::Trap));
    let o = start(&engine, RETRIED);
    let out = one(&o, Message::new("t", ""));
    assert_eq!(delivered(&out).headers.get("ok"), Some("1"));
    assert!(matches!(
        events(&out)[0].1,
        TraceEvent::Ran { attempts: 3, .. }
    ));
}

#[test]
fn retries_spent_make_a_dead_letter_with_every_header() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("m", |_| Behaviour::fail(ErrorKind::GuestError, "no good"));
    let o = start(&engine, RETRIED);
    let mut input = Message::new("in.topic", "payload");
    input.headers.push("kept", "yes");
    let out = one(&o, input.clone());
    let letter = dead_letter(&out);
    assert_eq!(letter.topic, "etl.dead-letter");
    assert_eq!(letter.payload, input.payload);
    let expected = [
        ("kept", "yes"),
        (dlq::ORIGINAL_TOPIC, "in.topic"),
        (dlq::PIPELINE, "p"),
        (dlq::STAGE, "3"),
        (dlq::MODULE, "m"),
        (dlq::ERROR_KIND, "guest_error"),
        (dlq::ERROR, "no good"),
        (dlq::ATTEMPTS, "3"),
    ];
    assert_eq!(letter.headers.iter().collect::<Vec<_>>(), expected);
    let cause = DeadLetterCause::of(letter).unwrap();
    let place = |c: &DeadLetterCause| {
        (
            c.original_topic.clone(),
            c.pipeline.clone(),
            c.stage,
            c.module.clone(),
        )
    };
    let first_place = (
        "in.topic".to_owned(),
        Some("p".to_owned()),
        Some(3),
        Some("m".to_owned()),
    );
    assert_eq!(place(&cause), first_place);
    // The message as it entered the pipeline, for a replay: the input here.
    assert_eq!(DeadLetterCause::entry(letter), Ok(input.clone()));
    assert_eq!(
        (cause.kind, cause.error.as_str(), cause.attempts),
        (ErrorKind::GuestError, "no good", Some(3))
    );

    // The dead letter sent through again fails again, now at the breaker
    // (open after five failures in a row: its second call was the fifth): a
    // second set of headers is appended, and the cause read back is the
    // second's.
    let again = one(&o, letter.clone());
    let again_letter = dead_letter(&again).clone();
    assert_eq!(again_letter.headers.len(), expected.len() + 7);
    let second = DeadLetterCause::of(&again_letter).unwrap();
    assert!(
        second
            .error
            .starts_with("the module's circuit breaker is open"),
        "{second}"
    );
    // Out of the second letter: the first, as it entered the second time.
    assert_eq!(DeadLetterCause::entry(&again_letter), Ok(letter.clone()));
    let (_, pipeline, stage, module) = first_place;
    assert_eq!(
        place(&second),
        ("etl.dead-letter".to_owned(), pipeline, stage, module)
    );
    assert_eq!(
        (second.kind, second.attempts),
        (ErrorKind::CircuitOpen, Some(2))
    );
}

#[test]
fn the_dead_letter_topic_is_configurable_and_holds_the_message_as_it_entered_the_pipeline() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("edit", append("!"));
    engine.module("fail", |_| Behaviour::fail(ErrorKind::Trap, "trapped"));
    engine.module("never", append("?"));
    let yaml = r#"
pipelines:
  - pipeline_id: first
    stages: [{priority: 0, modules: [{module_id: edit}]}]
  - pipeline_id: second
    error_handling: SendToDeadLetter
    stages:
      - priority: 0
        modules: [{module_id: edit}, {module_id: fail}, {module_id: never}]
  - pipeline_id: third
    stages: [{priority: 0, modules: [{module_id: never}]}]
"#;
    let o = start_with(&engine, yaml, options().dead_letter_topic("errors"));
    let out = one(&o, Message::new("t", ">"));
    let letter = dead_letter(&out);
    assert_eq!(letter.topic, "errors");
    // As it entered `second`: `first`'s edit kept, `second`'s undone.
    assert_eq!(&letter.payload[..], b">!");
    assert_eq!(letter.headers.get(dlq::ATTEMPTS), Some("1"));
    // Nothing after it runs: the rest of `second`, and `third`.
    let events = events(&out);
    assert_eq!(events.len(), 5);
    for (module, event) in &events[3..] {
        assert_eq!(
            (module.as_str(), event),
            ("never", &TraceEvent::Skipped(SkipReason::EarlierFailure))
        );
    }
}

/// execution.md: `etl-dlq-attempts` is "how many times M was called for this
/// message": M's calls at every listing of it count, in an earlier pipeline
/// whose work was undone and in an earlier stage that skipped it alike; a
/// listing of the same `module_id` with other settings is another module.
#[test]
fn a_dead_letters_attempts_count_every_call_of_the_module_for_the_message() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("fail", |_| {
        Behaviour::fail(ErrorKind::GuestError, "no good")
    });
    let yaml = r#"
pipelines:
  - pipeline_id: stops
    error_handling: StopPipeline
    stages: [{priority: 0, modules: [{module_id: fail}]}]
  - pipeline_id: other-settings
    error_handling: SkipModule
    stages:
      - priority: 0
        modules: [{module_id: fail, instance_config: {custom_config: {other: true}}}]
  - pipeline_id: retries
    error_handling: RetryWithBackoff
    max_retries: 1
    stages:
      - {priority: 0, continue_on_error: true, modules: [{module_id: fail}]}
      - {priority: 1, parallel_execution: true, modules: [{module_id: fail}]}
"#;
    let o = start(&engine, yaml);
    let out = one(&o, Message::new("t", ""));
    let letter = dead_letter(&out);
    assert_eq!(letter.headers.get(dlq::PIPELINE), Some("retries"));
    assert_eq!(letter.headers.get(dlq::STAGE), Some("1"));
    // 1 (stops) + 2 (retries, stage 0) + 2 (retries, stage 1); not the
    // other settings' call.
    assert_eq!(letter.headers.get(dlq::ATTEMPTS), Some("5"));
    // The trace counts each listing's own.
    let attempts: Vec<u32> = events(&out)
        .iter()
        .map(|(_, event)| match event {
            TraceEvent::Failed { attempts, .. } => *attempts,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(attempts, [1, 1, 2, 2]);
}

#[test]
fn skip_module_and_continue_on_error_go_on_without_the_failed_module() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("a", append("a"));
    engine.module("fail", |_| Behaviour::fail(ErrorKind::Trap, "boom"));
    engine.module("c", append("c"));
    for yaml in [
        r#"
pipeline_id: p
error_handling: SkipModule
stages:
  - priority: 0
    modules: [{module_id: a}, {module_id: fail}, {module_id: c}]
"#,
        r#"
pipeline_id: p
error_handling: StopPipeline
stages:
  - priority: 0
    continue_on_error: true
    modules: [{module_id: a}, {module_id: fail}, {module_id: c}]
"#,
    ] {
        let o = start(&engine, yaml);
        let out = one(&o, Message::new("t", ">"));
        assert_eq!(&delivered(&out).payload[..], b">ac");
        assert!(matches!(
            &events(&out)[1],
            (m, TraceEvent::Failed { kind: ErrorKind::Trap, action: FailureAction::Skipped, attempts: 1, .. }) if m == "fail"
        ));
    }
}

/// A module that sets every field of a message (the payload twice), marking
/// each with `n`.
fn every_field(n: &'static str) -> impl Fn(&Message) -> Behaviour {
    move |_: &Message| {
        Behaviour::ok(Outcome::Edited(vec![
            Edit::SetPayload(Bytes::from(format!("first payload of {n}"))),
            Edit::SetTopic(format!("topic-{n}")),
            Edit::SetKey(Bytes::from(format!("key-{n}"))),
            Edit::SetHeader("h".into(), n.into()),
            Edit::RemoveHeader("keep".into()),
            Edit::SetTimestamp(7),
            Edit::SetPayload(Bytes::from(format!("payload-{n}"))),
        ]))
    }
}

#[test]
fn a_failed_pipeline_gives_back_every_field_as_it_entered() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("a", every_field("a"));
    engine.module("b", every_field("b"));
    engine.module("clear", |_| {
        Behaviour::ok(Outcome::Edited(vec![
            Edit::ClearKey,
            Edit::ClearTimestamp,
            Edit::RemoveHeader("h".into()),
        ]))
    });
    engine.module("fail", |_| Behaviour::fail(ErrorKind::Trap, "trapped"));
    let mut entry = Message::new("t", "p0");
    entry.key = Some(Bytes::from("k0"));
    entry.timestamp_ms = Some(5);
    entry.headers.push("keep", "1");
    entry.headers.push("h", "0");
    for strategy in ["StopPipeline", "SendToDeadLetter"] {
        let yaml = format!(
            r#"
pipeline_id: p
error_handling: {strategy}
stages:
  - priority: 0
    modules: [{{module_id: a}}, {{module_id: b}}, {{module_id: clear}}]
  - priority: 1
    modules: [{{module_id: fail}}]
"#
        );
        let o = start(&engine, &yaml);
        let out = one(&o, entry.clone());
        let got = match out.disposition {
            Disposition::Delivered(m) => m,
            Disposition::DeadLettered(mut letter) => {
                // The letter is the entry, on the dead-letter topic, with its
                // headers after the entry's.
                assert_eq!(letter.headers.get(dlq::ORIGINAL_TOPIC), Some("t"));
                let headers: Vec<_> = letter.headers.iter().collect();
                let (own, added) = headers.split_at(entry.headers.len());
                assert!(added.iter().all(|(name, _)| name.starts_with("etl-dlq-")));
                let mut entry_headers = rustmq_etl_core::Headers::default();
                own.iter().for_each(|(n, v)| entry_headers.push(*n, *v));
                letter.headers = entry_headers;
                letter.topic = entry.topic.clone();
                letter
            }
            other => panic!("{strategy}: {other:?}"),
        };
        assert_eq!(got, entry, "{strategy}");
    }
}

#[test]
fn stop_pipeline_undoes_the_pipeline_and_the_next_pipeline_receives_the_message() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("a", append("a"));
    engine.module("fail", |_| {
        Behaviour::fail(ErrorKind::InvalidOutput, "bad answer")
    });
    engine.module("c", append("c"));
    let yaml = r#"
pipelines:
  - pipeline_id: first
    error_handling: StopPipeline
    stages:
      - priority: 0
        modules: [{module_id: a}]
      - priority: 1
        modules: [{module_id: fail}]
      - priority: 2
        modules: [{module_id: c}]
  - pipeline_id: second
    stages: [{priority: 0, modules: [{module_id: c}]}]
"#;
    let o = start(&engine, yaml);
    let out = one(&o, Message::new("t", ">"));
    assert_eq!(&delivered(&out).payload[..], b">c");
    let events = events(&out);
    assert!(matches!(
        events[1].1,
        TraceEvent::Failed {
            action: FailureAction::StoppedPipeline,
            ..
        }
    ));
    assert_eq!(events[2].1, TraceEvent::Skipped(SkipReason::EarlierFailure));
}

#[test]
fn a_module_timeout_fires_at_its_budget() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("slow", |_| {
        set_header("late", "1").after(Duration::from_secs(5))
    });
    let yaml = r#"
pipeline_id: p
error_handling: SendToDeadLetter
stages:
  - priority: 0
    modules: [{module_id: slow, instance_config: {execution_timeout_ms: 50}}]
"#;
    let o = start(&engine, yaml);
    let started = Instant::now();
    let out = one(&o, Message::new("t", ""));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        dead_letter(&out).headers.get(dlq::ERROR_KIND),
        Some("timeout")
    );
}

#[test]
fn a_stage_timeout_fires_and_a_skipped_timed_out_module_ends_the_stage() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("slow", |_| {
        set_header("late", "1").after(Duration::from_secs(5))
    });
    engine.module("after", |_| set_header("after", "1"));
    engine.module("next-stage", |_| set_header("next", "1"));
    let yaml = r#"
pipeline_id: p
error_handling: SkipModule
stages:
  - priority: 0
    stage_timeout_ms: 50
    modules: [{module_id: slow}, {module_id: after}]
  - priority: 1
    modules: [{module_id: next-stage}]
"#;
    let o = start(&engine, yaml);
    let started = Instant::now();
    let out = one(&o, Message::new("t", ""));
    // The module's own budget is 1000 ms: the stage's 50 ms was the tighter.
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let m = delivered(&out);
    assert_eq!(
        (m.headers.get("after"), m.headers.get("next")),
        (None, Some("1"))
    );
    let events = events(&out);
    assert!(matches!(
        events[0].1,
        TraceEvent::Failed {
            kind: ErrorKind::StageTimeout,
            action: FailureAction::EndedStage,
            ..
        }
    ));
    assert_eq!(events[1].1, TraceEvent::Skipped(SkipReason::EarlierFailure));
}

/// A module that answers after its stage's or pipeline's time ran out was
/// still running when it ran out: it fails with that budget's kind and its
/// answer is not used. (The runner here, like a watchdog between its ticks,
/// does not stop it: the module's own code sleeps past the deadline.) The
/// blame is not the next module's, found with no time left and never called.
#[test]
fn an_answer_after_the_deadline_fails_the_module_that_gave_it() {
    for (pipeline_budget, stage_budget, kind) in [
        ("", "stage_timeout_ms: 20", "stage_timeout"),
        ("global_timeout_ms: 20", "", "pipeline_timeout"),
    ] {
        let engine = Arc::new(StandIn::new(1));
        engine.module("late", |_| {
            std::thread::sleep(Duration::from_millis(60));
            set_header("late", "1")
        });
        let next_calls = Arc::new(AtomicUsize::new(0));
        let calls = next_calls.clone();
        engine.module("next", move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            set_header("next", "1")
        });
        let yaml = format!(
            "pipeline_id: p\nerror_handling: SendToDeadLetter\n{pipeline_budget}\nstages:\n  \
             - {{priority: 0, {stage_budget}{}modules: [{{module_id: late}}, {{module_id: next}}]}}\n",
            if stage_budget.is_empty() { "" } else { ", " }
        );
        let o = start(&engine, &yaml);
        let out = one(&o, Message::new("in", "x"));
        let letter = dead_letter(&out);
        for (name, value) in [
            (dlq::MODULE, "late"),
            (dlq::ERROR_KIND, kind),
            (dlq::ATTEMPTS, "1"),
        ] {
            assert_eq!(letter.headers.get(name), Some(value), "{kind}: {name}");
        }
        assert_eq!(
            letter.headers.get("late"),
            None,
            "{kind}: its answer is not used"
        );
        let error = letter.headers.get(dlq::ERROR).unwrap();
        assert!(error.contains("its answer came after"), "{kind}: {error}");
        assert_eq!(next_calls.load(Ordering::SeqCst), 0, "{kind}");
        skipped_for_earlier_failure(&events(&out), 1, "next");
    }
    // An error answered late fails so too, quoting what it answered.
    let engine = Arc::new(StandIn::new(1));
    engine.module("late", |_| {
        std::thread::sleep(Duration::from_millis(60));
        Behaviour::fail(ErrorKind::GuestError, "oops")
    });
    let yaml = "pipeline_id: p\nerror_handling: SendToDeadLetter\n\
                stages: [{priority: 0, stage_timeout_ms: 20, modules: [{module_id: late}]}]";
    let out = one(&start(&engine, yaml), Message::new("in", "x"));
    let letter = dead_letter(&out);
    assert_eq!(letter.headers.get(dlq::ERROR_KIND), Some("stage_timeout"));
    let error = letter.headers.get(dlq::ERROR).unwrap();
    assert!(
        error.ends_with("(it answered after, with an error: oops)"),
        "{error}"
    );
}

/// Edits that would leave a message past `Options::max_message_bytes`, and
/// larger than it was, fail `invalid_output`, blamed on the module whose
/// answer grew it (not on the next, which would have met it past its
/// memory); the dead letter is the message as it entered. A message that
/// arrives past the limit is not refused, and may shrink; 0 is no limit.
#[test]
fn edits_that_grow_a_message_past_the_limit_fail_the_module_that_made_them() {
    let engine = Arc::new(StandIn::new(1));
    // A 600-byte header more each time (named by how many there are).
    engine.module("grow", |m: &Message| {
        Behaviour::ok(Outcome::Edited(vec![Edit::SetHeader(
            format!("h{}", m.headers.len()),
            "v".repeat(600),
        )]))
    });
    engine.module("halve", |m: &Message| {
        Behaviour::ok(Outcome::Edited(vec![Edit::SetPayload(
            m.payload.slice(..m.payload.len() / 2),
        )]))
    });
    let yaml = r#"
pipeline_id: p
error_handling: SendToDeadLetter
stages:
  - {priority: 0, modules: [{module_id: halve}]}
  - {priority: 1, modules: [{module_id: grow}]}
  - {priority: 2, modules: [{module_id: grow}]}
"#;
    let limited = start_with(&engine, yaml, options().max_message_bytes(1_000));
    // 1 + 100 bytes, halved to 51, grown to 653, then past 1,000: the
    // second growth fails.
    let out = one(&limited, Message::new("t", vec![b'x'; 100]));
    let letter = dead_letter(&out);
    for (name, value) in [
        (dlq::MODULE, "grow"),
        (dlq::STAGE, "2"),
        (dlq::ERROR_KIND, "invalid_output"),
    ] {
        assert_eq!(letter.headers.get(name), Some(value), "{name}");
    }
    assert_eq!(letter.payload.len(), 100, "the message as it entered");
    let error = letter.headers.get(dlq::ERROR).unwrap();
    assert!(
        error.contains("would make the message 1255 bytes, past the engine's limit of 1000"),
        "{error}"
    );
    // Arriving at 4,000 bytes: halved (smaller than it was) it goes on to
    // the first growth, which fails.
    let out = one(&limited, Message::new("t", vec![b'x'; 4_000]));
    assert_eq!(dead_letter(&out).headers.get(dlq::STAGE), Some("1"));
    // No limit: both grow.
    let unlimited = start_with(&engine, yaml, options().max_message_bytes(0));
    let out = one(&unlimited, Message::new("t", vec![b'x'; 4_000]));
    assert_eq!(delivered(&out).headers.len(), 2);
    // In a parallel stage, a module's edits are judged on top of those
    // declared before it, as the stage's end combines them: 51 bytes, 653
    // with `grow`'s, past 1,000 with `wide`'s.
    engine.module("wide", |_| {
        Behaviour::ok(Outcome::Edited(vec![Edit::SetHeader(
            "w".into(),
            "w".repeat(600),
        )]))
    });
    let parallel = r#"
pipeline_id: p
error_handling: SendToDeadLetter
stages:
  - {priority: 0, modules: [{module_id: halve}]}
  - {priority: 1, parallel_execution: true, modules: [{module_id: grow}, {module_id: wide}]}
"#;
    let o = start_with(&engine, parallel, options().max_message_bytes(1_000));
    let letter = dead_letter(&one(&o, Message::new("t", vec![b'x'; 100]))).clone();
    assert_eq!(letter.headers.get(dlq::MODULE), Some("wide"));
    assert_eq!(letter.headers.get(dlq::ERROR_KIND), Some("invalid_output"));
}

#[test]
fn a_pipeline_timeout_fires_and_under_skip_delivers_the_message_as_it_stands() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("quick", |_| set_header("quick", "1"));
    engine.module("slow", |_| {
        set_header("late", "1").after(Duration::from_secs(5))
    });
    engine.module("later", |_| set_header("later", "1"));
    // (250 ms: `quick` must answer within it, on a loaded machine too.)
    let yaml = r#"
pipelines:
  - pipeline_id: p
    error_handling: SkipModule
    global_timeout_ms: 250
    stages:
      - priority: 0
        modules: [{module_id: quick}, {module_id: slow}]
      - priority: 1
        modules: [{module_id: later}]
  - pipeline_id: q
    stages: [{priority: 0, modules: [{module_id: later}]}]
"#;
    let o = start(&engine, yaml);
    let started = Instant::now();
    let out = one(&o, Message::new("t", ""));
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let m = delivered(&out);
    // `p` ended at its timeout with `quick`'s edit; `q` ran.
    assert_eq!(m.headers.get("quick"), Some("1"));
    assert_eq!(m.headers.get("later"), Some("1"));
    let events = events(&out);
    assert!(matches!(
        events[1].1,
        TraceEvent::Failed {
            kind: ErrorKind::PipelineTimeout,
            action: FailureAction::EndedPipeline,
            ..
        }
    ));
    assert_eq!(events[2].1, TraceEvent::Skipped(SkipReason::EarlierFailure));
}

/// Each message's pipeline time is its own: in one batch on one engine
/// thread, messages that each fit the pipeline's budget all do, though
/// together they take longer than it.
#[test]
fn each_message_of_a_batch_has_its_own_pipeline_time() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("slow", |_| {
        set_header("done", "1").after(Duration::from_millis(60))
    });
    let yaml = r#"
pipeline_id: p
global_timeout_ms: 100
stages:
  - priority: 0
    modules: [{module_id: slow}]
"#;
    let o = start(&engine, yaml);
    let out = o
        .process_batch_blocking(vec![Message::new("t", ""); 4], ProcessOptions::default())
        .unwrap();
    for p in &out {
        assert_eq!(delivered(p).headers.get("done"), Some("1"));
    }
}

#[test]
fn the_wait_between_retries_counts_against_the_pipeline_budget() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("m", |_| Behaviour::fail(ErrorKind::Trap, "always"));
    let yaml = r#"
pipeline_id: p
error_handling: RetryWithBackoff
max_retries: 50
global_timeout_ms: 100
stages:
  - priority: 0
    modules: [{module_id: m}]
"#;
    let slow_retries = waits(40);
    let o = start_with(&engine, yaml, slow_retries);
    let started = Instant::now();
    let out = one(&o, Message::new("t", ""));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let letter = dead_letter(&out);
    assert_eq!(
        letter.headers.get(dlq::ERROR_KIND),
        Some("pipeline_timeout")
    );
    let attempts: u32 = letter.headers.get(dlq::ATTEMPTS).unwrap().parse().unwrap();
    assert!(
        (2..=6).contains(&attempts),
        "{attempts} attempts in 100 ms of 20-40 ms waits"
    );
}

#[test]
fn the_circuit_breaker_opens_fails_fast_and_closes_after_a_good_probe() {
    let engine = Arc::new(StandIn::new(1));
    let healthy = Arc::new(AtomicU32::new(0));
    let state = healthy.clone();
    engine.module("m", move |_| {
        if state.load(Ordering::SeqCst) == 1 {
            set_header("ok", "1")
        } else {
            Behaviour::fail(ErrorKind::Trap, "down")
        }
    });
    let yaml = r#"
pipeline_id: p
error_handling: SkipModule
stages: [{priority: 0, modules: [{module_id: m}]}]
"#;
    let o = start_with(
        &engine,
        yaml,
        options().breaker(
            BreakerSettings::default()
                .failures(3)
                .cool_down(Duration::from_millis(100)),
        ),
    );
    use rustmq_etl_orchestrator::CircuitState::{Closed, HalfOpen, Open};
    // Each message's failure kind, and the breaker as its trace says it met it.
    let kinds = |o: &Orchestrator<StandIn>| -> Vec<(ErrorKind, _)> {
        traced(o, (0..5).map(|_| Message::new("t", "")).collect())
            .iter()
            .map(|p| {
                let entry = &p.trace.as_ref().unwrap().entries[0];
                match &entry.event {
                    TraceEvent::Failed { kind, .. } => (*kind, entry.circuit),
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    };
    assert_eq!(
        kinds(&o),
        [
            (ErrorKind::Trap, Some(Closed)),
            (ErrorKind::Trap, Some(Closed)),
            (ErrorKind::Trap, Some(Closed)),
            (ErrorKind::CircuitOpen, Some(Open)),
            (ErrorKind::CircuitOpen, Some(Open))
        ]
    );
    // The breaker's gauge: 1 open, 2 once the cool-down is over (the next
    // call is the probe), 0 once the probe has closed it.
    let gauge = |o: &Orchestrator<StandIn>| -> String {
        let text = scraped(o);
        text.lines()
            .find_map(|l| l.strip_prefix(r#"rustmq_etl_circuit_state{module="m"} "#))
            .unwrap_or_else(|| panic!("no circuit_state in\n{text}"))
            .to_owned()
    };
    assert_eq!(gauge(&o), "1");
    healthy.store(1, Ordering::SeqCst);
    assert_eq!(
        kinds(&o)[0],
        (ErrorKind::CircuitOpen, Some(Open)),
        "still cooling down"
    );
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(gauge(&o), "2");
    let out = one(&o, Message::new("t", ""));
    assert_eq!(delivered(&out).headers.get("ok"), Some("1"), "the probe");
    assert_eq!(
        out.trace.as_ref().unwrap().entries[0].circuit,
        Some(HalfOpen)
    );
    let out = one(&o, Message::new("t", ""));
    assert_eq!(out.trace.as_ref().unwrap().entries[0].circuit, Some(Closed));
    assert_eq!(
        o.occurrences()[0].circuit,
        rustmq_etl_orchestrator::CircuitState::Closed
    );
    assert_eq!(gauge(&o), "0");
}

/// In order, a batch's messages meet the breaker as input order has it:
/// the first message's retries open it (their waits let no later message
/// run), and every later one is refused, on two engine threads, every time.
#[test]
fn in_order_a_batch_meets_the_breaker_as_its_input_order_has_it() {
    for _ in 0..20 {
        let engine = Arc::new(StandIn::new(2));
        engine.module("m", |m: &Message| {
            if &m.payload[..] == b"bad" {
                Behaviour::fail(ErrorKind::GuestError, "bad")
            } else {
                set_header("ok", "1")
            }
        });
        let o = start_with(
            &engine,
            "pipeline_id: p\nerror_handling: RetryWithBackoff\nmax_retries: 2\nstages: [{priority: 0, modules: [{module_id: m}]}]",
            options().breaker(BreakerSettings::default().failures(3).cool_down(Duration::from_secs(60))),
        );
        let mut messages = vec![Message::new("t", "bad")];
        messages.extend((0..9).map(|_| Message::new("t", "good")));
        let out = o
            .process_batch_blocking(messages, ProcessOptions::default().in_order(true))
            .unwrap();
        let letters: Vec<(&str, &str)> = out
            .iter()
            .map(|p| {
                let letter = dead_letter(p);
                let header = |name| letter.headers.get(name).unwrap();
                (header(dlq::ERROR_KIND), header(dlq::ATTEMPTS))
            })
            .collect();
        let mut expected = vec![("guest_error", "3")];
        expected.extend([("circuit_open", "0"); 9]);
        assert_eq!(letters, expected);
    }
}

#[test]
fn the_same_module_with_two_configurations_is_two_occurrences() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("m", |_| set_header("m", "1"));
    let yaml = r#"
pipeline_id: p
stages:
  - priority: 0
    modules:
      - {module_id: m, instance_config: {custom_config: {"a": 1}}}
      - {module_id: m, instance_config: {custom_config: {"a": 2}}}
  - priority: 1
    modules:
      - {module_id: m, instance_config: {custom_config: {"a": 1}}}
"#;
    let o = start(&engine, yaml);
    let plan = o.plan();
    assert_eq!(plan.occurrences().len(), 2);
    assert_eq!(plan.occurrences()[1].settings.custom_config, r#"{"a":2}"#);
    // The third listing is the first's occurrence; each listing runs.
    let listings: Vec<usize> = plan
        .pipelines()
        .iter()
        .flat_map(|p| &p.stages)
        .flat_map(|s| &s.modules)
        .map(|m| m.occurrence)
        .collect();
    assert_eq!(listings, [0, 1, 0]);
    let out = one(&o, Message::new("t", ""));
    assert_eq!(delivered(&out).headers.get("m"), Some("1"));
    let ran = events(&out)
        .iter()
        .filter(|(_, e)| matches!(e, TraceEvent::Ran { attempts: 1, .. }))
        .count();
    assert_eq!(ran, 3);
}

/// A retry the breaker refuses fails with `circuit_open`, and its text says
/// what failed before (the cause); retries spent on one kind keep its text.
#[test]
fn a_retry_refused_by_the_breaker_says_what_failed_before() {
    // The dead letter's error kind and text, with a breaker of `failures`.
    let dead_letter = |failures: u32| -> (String, String) {
        let engine = Arc::new(StandIn::new(1));
        engine.module("bad", |_| {
            Behaviour::fail(ErrorKind::GuestError, "reading must be a number")
        });
        let o = start_with(
            &engine,
            "pipeline_id: p\nerror_handling: RetryWithBackoff\nmax_retries: 3\nstages: [{priority: 0, modules: [{module_id: bad}]}]",
            options().breaker(BreakerSettings::default().failures(failures).cool_down(Duration::from_secs(60))),
        );
        let out = o
            .process_batch_blocking(vec![Message::new("t", "")], ProcessOptions::default())
            .unwrap();
        let Disposition::DeadLettered(letter) = &out[0].disposition else {
            panic!("{:?}", out[0].disposition)
        };
        let header = |name| letter.headers.get(name).unwrap().to_owned();
        (header(dlq::ERROR_KIND), header(dlq::ERROR))
    };
    // Two failed calls open the breaker: the third attempt is refused.
    let (kind, error) = dead_letter(2);
    assert_eq!(kind, "circuit_open");
    assert!(
        error.starts_with("the module's circuit breaker is open")
            && error
                .ends_with("; the attempt before failed: guest_error: reading must be a number"),
        "{error}"
    );
    // Four attempts, all the module's own error: its text as it is.
    assert_eq!(
        dead_letter(100),
        (
            "guest_error".to_owned(),
            "reading must be a number".to_owned()
        )
    );
}

#[test]
fn each_occurrence_has_its_own_series_and_breaker_state() {
    // One `module_id` three ways in one pipeline: with the default settings,
    // and with two `custom_config`s. The module fails once the message has
    // its header, so the first occurrence edits and the two after it fail:
    // each of those two opens its own breaker after two failed calls and
    // refuses the third message. Shared series would count four traps.
    let engine = Arc::new(StandIn::new(1));
    engine.module("m", |m| {
        if m.headers.get("m").is_some() {
            Behaviour::fail(ErrorKind::Trap, "again")
        } else {
            set_header("m", "1")
        }
    });
    let yaml = r#"
pipeline_id: p
error_handling: SkipModule
stages:
  - {priority: 0, modules: [{module_id: m}]}
  - {priority: 1, modules: [{module_id: m, instance_config: {custom_config: {"a": 1}}}]}
  - {priority: 2, modules: [{module_id: m, instance_config: {custom_config: {"a": 2}}}]}
"#;
    let o = start_with(
        &engine,
        yaml,
        options().breaker(
            BreakerSettings::default()
                .failures(2)
                .cool_down(Duration::from_secs(60)),
        ),
    );
    let plan = o.plan();
    let labels: Vec<Option<String>> = plan
        .occurrences()
        .iter()
        .map(|spec| spec.settings.label())
        .collect();
    let (a1, a2) = match &labels[..] {
        [None, Some(a1), Some(a2)] => (a1.clone(), a2.clone()),
        other => panic!("labels {other:?}"),
    };
    assert_ne!(a1, a2);
    let out = o
        .process_batch_blocking(vec![Message::new("t", ""); 3], ProcessOptions::default())
        .unwrap();
    for p in &out {
        assert_eq!(delivered(p).headers.get("m"), Some("1"));
    }
    let states: Vec<_> = o
        .occurrences()
        .into_iter()
        .map(|o| (o.spec.settings.label(), o.circuit, o.used_in))
        .collect();
    use rustmq_etl_orchestrator::CircuitState::{Closed, Open};
    let used_in = |priority| vec![("p".to_owned(), priority)];
    assert_eq!(
        states,
        [
            (None, Closed, used_in(0)),
            (Some(a1.clone()), Open, used_in(1)),
            (Some(a2.clone()), Open, used_in(2))
        ]
    );

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || o.publish_metrics());
    let text = handle.render();
    let lines: Vec<&str> = text.lines().collect();
    // The plain occurrence edited three messages; each configured one failed
    // twice (traps) and was refused once by its open breaker.
    let mut expected = vec![
        r#"rustmq_etl_module_calls_total{pipeline="p",module="m",outcome="edited"} 3"#.to_owned(),
    ];
    for settings in [&a1, &a2] {
        let labels = format!(r#"pipeline="p",module="m",settings="{settings}""#);
        expected.extend([
            format!(r#"rustmq_etl_module_calls_total{{{labels},outcome="failed"}} 2"#),
            format!(r#"rustmq_etl_module_errors_total{{{labels},kind="trap"}} 2"#),
            format!(r#"rustmq_etl_module_errors_total{{{labels},kind="circuit_open"}} 1"#),
        ]);
    }
    for line in expected {
        assert!(lines.contains(&line.as_str()), "{line} in\n{text}");
    }
    // The breakers' gauges, exactly: one each, no unlabelled second series.
    let gauges = |text: &str| -> Vec<String> {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("rustmq_etl_circuit_state{"))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let mut expected = vec![
        r#"rustmq_etl_circuit_state{module="m"} 0"#.to_owned(),
        format!(r#"rustmq_etl_circuit_state{{module="m",settings="{a1}"}} 1"#),
        format!(r#"rustmq_etl_circuit_state{{module="m",settings="{a2}"}} 1"#),
    ];
    expected.sort();
    assert_eq!(gauges(&text), expected);

    // A reload gives the last occurrence other settings: a new occurrence
    // with a closed breaker, and the one taken out of service no longer
    // reads open.
    o.reload(&config(&yaml.replace(r#"{"a": 2}"#, r#"{"a": 3}"#)))
        .unwrap();
    let a3 = o.occurrences()[2].spec.settings.label().unwrap();
    assert!(![&a1, &a2].contains(&&a3));
    metrics::with_local_recorder(&recorder, || o.publish_metrics());
    let mut expected = vec![
        r#"rustmq_etl_circuit_state{module="m"} 0"#.to_owned(),
        format!(r#"rustmq_etl_circuit_state{{module="m",settings="{a1}"}} 1"#),
        format!(r#"rustmq_etl_circuit_state{{module="m",settings="{a2}"}} 0"#),
        format!(r#"rustmq_etl_circuit_state{{module="m",settings="{a3}"}} 0"#),
    ];
    expected.sort();
    assert_eq!(gauges(&handle.render()), expected);
    // Back to the settings before: that occurrence finds its breaker as it
    // was, open.
    o.reload(&config(yaml)).unwrap();
    assert_eq!(o.occurrences()[2].spec.settings.label(), Some(a2.clone()));
    assert_eq!(o.occurrences()[2].circuit, Open);
}

/// An unavailable occurrence's gauges read 0 once a reload takes it out of
/// service (the series stays, as the breaker's does).
#[test]
fn an_unavailable_module_taken_out_of_service_reads_0() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("a", append("a"));
    let two = "pipelines:\n\
               - {pipeline_id: p, stages: [{priority: 0, modules: [{module_id: a}]}]}\n\
               - {pipeline_id: q, stages: [{priority: 0, modules: [{module_id: missing}]}]}\n";
    let source = |id: &str| match id {
        "a" => Ok(Vec::new()),
        _ => Err(format!("{id} is not there")),
    };
    let o = Orchestrator::new(engine.clone(), &config(two), source, options()).unwrap();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let published = || {
        metrics::with_local_recorder(&recorder, || o.publish_metrics());
        let text = handle.render();
        let value = |series: &str| -> Option<String> {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
        };
        (
            value(r#"rustmq_etl_module_unavailable{module="missing"}"#),
            value("rustmq_etl_modules_unavailable"),
        )
    };
    assert_eq!(published(), (Some("1".into()), Some("1".into())));
    o.reload(&config(
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: a}]}]",
    ))
    .unwrap();
    assert_eq!(published(), (Some("0".into()), Some("0".into())));
}

/// A host failure during the probe call gives the probe back: the next
/// message may probe at once, and its success closes the breaker (it stayed
/// half-open for ever, every call refused).
#[test]
fn a_host_failure_during_the_probe_gives_the_probe_back() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("m", |m| match &m.payload[..] {
        b"boom" => panic!("the host broke"),
        b"bad" => Behaviour::fail(ErrorKind::Trap, "bad"),
        _ => set_header("ok", "1"),
    });
    let o = start_with(
        &engine,
        "pipeline_id: p\nerror_handling: SkipModule\nstages: [{priority: 0, modules: [{module_id: m}]}]",
        options().breaker(BreakerSettings::default().failures(1).cool_down(Duration::from_millis(20))),
    );
    assert!(delivered(&one(&o, Message::new("t", "bad")))
        .headers
        .get("ok")
        .is_none());
    std::thread::sleep(Duration::from_millis(30));
    // The probe: the host fails.
    let out = one(&o, Message::new("t", "boom"));
    assert_eq!(dead_letter(&out).headers.get(dlq::ERROR_KIND), Some("trap"));
    // The next message probes at once, and closes the breaker.
    let out = one(&o, Message::new("t", "ok"));
    assert_eq!(
        delivered(&out).headers.get("ok"),
        Some("1"),
        "{:?}",
        out.trace
    );
    assert_eq!(
        o.occurrences()[0].circuit,
        rustmq_etl_orchestrator::CircuitState::Closed
    );
}

#[test]
fn a_host_failure_makes_a_dead_letter_and_the_next_messages_run_as_before() {
    // A stand-in module runs in the engine thread's own code: its panic is a
    // host failure. The message becomes a dead letter (kind `trap`) at the
    // module it was at, whatever the strategy; the rest of the batch, on the
    // same thread and topics, is selected and run as before.
    let engine = Arc::new(StandIn::new(1));
    engine.module("fragile", |m| {
        if &m.payload[..] == b"boom" {
            panic!("the host broke");
        }
        set_header("fragile", "1")
    });
    engine.module("after", |_| set_header("after", "1"));
    let yaml = r#"
pipeline_id: p
error_handling: SkipModule
stages:
  - {priority: 0, modules: [{module_id: fragile, topic_filters: [{filter_type: Exact, pattern: a}]}]}
  - {priority: 1, modules: [{module_id: after, topic_filters: [{filter_type: Exact, pattern: a}]}]}
"#;
    let o = start(&engine, yaml);
    let inputs = [
        ("a", "ok"),
        ("a", "boom"),
        ("a", "ok"),
        ("b", "ok"),
        ("a", "ok"),
    ];
    let out = o
        .process_batch_blocking(
            inputs.iter().map(|(t, p)| Message::new(*t, *p)).collect(),
            ProcessOptions::default(),
        )
        .unwrap();
    for ((topic, payload), p) in inputs.iter().zip(&out) {
        if *payload == "boom" {
            let letter = dead_letter(p);
            assert_eq!(letter.headers.get(dlq::ERROR_KIND), Some("trap"));
            assert_eq!(letter.headers.get(dlq::MODULE), Some("fragile"));
            // The call the host failed in counts.
            assert_eq!(letter.headers.get(dlq::ATTEMPTS), Some("1"));
            assert!(letter
                .headers
                .get(dlq::ERROR)
                .unwrap()
                .contains("the host broke"));
            let cause = DeadLetterCause::of(letter).unwrap();
            assert_eq!(
                (
                    cause.pipeline.as_deref(),
                    cause.stage,
                    cause.module.as_deref()
                ),
                (Some("p"), Some(0), Some("fragile"))
            );
            assert_eq!((cause.kind, cause.attempts), (ErrorKind::Trap, Some(1)));
            continue;
        }
        let m = delivered(p);
        let ran = *topic == "a";
        assert_eq!(m.headers.get("fragile").is_some(), ran, "{topic}");
        assert_eq!(m.headers.get("after").is_some(), ran, "{topic}");
    }
}

/// A host failure after an earlier stage's edits: a `SkipModule` pipeline
/// keeps no copy of the message as it entered, so its dead letter is the
/// message as it stood (the edits in it, its topic the one moved to); under
/// every other strategy it is the message as it entered the pipeline. Never
/// retried (docs/execution.md, "A host failure").
#[test]
fn a_host_failure_dead_letters_the_entry_unless_the_pipeline_skips_modules() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("edit", |m| {
        let mut payload = m.payload.to_vec();
        payload.push(b'+');
        Behaviour::ok(Outcome::Edited(vec![
            Edit::SetPayload(Bytes::from(payload)),
            Edit::SetTopic("moved".into()),
        ]))
    });
    engine.module("fragile", |_| panic!("the host broke"));
    for (strategy, letter_payload, original_topic) in [
        ("SkipModule", "in+", "moved"),
        ("StopPipeline", "in", "t"),
        ("SendToDeadLetter", "in", "t"),
        ("RetryWithBackoff", "in", "t"),
    ] {
        let yaml = format!(
            "pipeline_id: p\nerror_handling: {strategy}\nstages:\n  - {{priority: 0, modules: [{{module_id: edit}}]}}\n  - {{priority: 1, modules: [{{module_id: fragile}}]}}\n"
        );
        let o = start(&engine, &yaml);
        let out = one(&o, Message::new("t", "in"));
        let letter = dead_letter(&out);
        assert_eq!(&letter.payload[..], letter_payload.as_bytes(), "{strategy}");
        let header = |name| letter.headers.get(name);
        assert_eq!(
            header(dlq::ORIGINAL_TOPIC),
            Some(original_topic),
            "{strategy}"
        );
        assert_eq!(header(dlq::ERROR_KIND), Some("trap"), "{strategy}");
        assert_eq!(header(dlq::MODULE), Some("fragile"), "{strategy}");
        assert_eq!(header(dlq::STAGE), Some("1"), "{strategy}");
        // Not retried, whatever the strategy.
        assert_eq!(header(dlq::ATTEMPTS), Some("1"), "{strategy}");
        assert!(
            header(dlq::ERROR).is_some_and(|e| e.contains("a rustmq-etl bug")),
            "{strategy}: {:?}",
            header(dlq::ERROR)
        );
    }
}

#[test]
fn results_come_in_input_order_and_every_input_is_accounted_for() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("m", |m: &Message| match m.payload[0] % 3 {
        0 => Behaviour::ok(Outcome::Dropped),
        1 => Behaviour::fail(ErrorKind::Trap, "trap"),
        _ => {
            Behaviour::ok(Outcome::Unchanged).after(Duration::from_micros(u64::from(m.payload[0])))
        }
    });
    let yaml = r#"
pipeline_id: p
error_handling: SendToDeadLetter
stages: [{priority: 0, modules: [{module_id: m}]}]
"#;
    let o = start(&engine, yaml);
    let input: Vec<Message> = (0..200u8).map(|i| Message::new("t", vec![i])).collect();
    let out = o
        .process_batch_blocking(input.clone(), ProcessOptions::default())
        .unwrap();
    assert_eq!(out.len(), input.len());
    for (i, p) in out.iter().enumerate() {
        match (i % 3, &p.disposition) {
            (0, Disposition::Dropped) => {}
            (1, Disposition::DeadLettered(m)) => assert_eq!(m.payload, input[i].payload),
            (2, Disposition::Delivered(m)) => assert_eq!(m, &input[i]),
            other => panic!("message {i}: {other:?}"),
        }
    }
}

#[test]
fn a_busy_module_makes_its_message_wait_without_failing() {
    let engine = Arc::new(StandIn::new(1));
    let first = Arc::new(AtomicU32::new(0));
    engine.module("m", move |_| {
        if first.fetch_add(1, Ordering::SeqCst) == 0 {
            Behaviour::busy(Instant::now() + Duration::from_millis(30))
        } else {
            set_header("ran", "1")
        }
    });
    let o = start(
        &engine,
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m}]}]",
    );
    let out = one(&o, Message::new("t", ""));
    assert_eq!(delivered(&out).headers.get("ran"), Some("1"));
}

/// A batch is answered in input order however it is cut: into waves of at
/// most `max_in_flight` messages, each into pieces of at most `chunk` (and
/// of at most its share of the engine threads) run by one or two engine
/// threads. Included: a batch within one wave run as one piece, of one
/// message and of 64; several waves of one piece each; pieces of 64.
#[test]
fn every_cut_of_a_batch_answers_in_input_order() {
    for (threads, max_in_flight, chunk, count) in [
        (2, 5, 2, 13),
        (2, 5, 2, 5),
        (2, 64, 64, 13),
        (2, 64, 3, 64),
        (2, 1, 1, 4),
        (2, 64, 64, 1),
        (2, 256, 64, 200),
        (2, 64, 64, 0),
        (1, 64, 64, 13),
        (1, 64, 64, 64),
        (1, 5, 64, 13),
        (1, 256, 64, 200),
    ] {
        let engine = Arc::new(StandIn::new(threads));
        engine.module("a", append("a"));
        let o = start_with(
            &engine,
            "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: a}]}]",
            options().max_in_flight(max_in_flight).chunk(chunk),
        );
        let messages = (0..count)
            .map(|i| Message::new(format!("t{i}"), format!("{i}:")))
            .collect();
        let out = o
            .process_batch_blocking(messages, ProcessOptions::default())
            .unwrap();
        let got: Vec<(String, Vec<u8>)> = out
            .iter()
            .map(|p| {
                let m = delivered(p);
                (m.topic.to_string(), m.payload.to_vec())
            })
            .collect();
        let expected: Vec<(String, Vec<u8>)> = (0..count)
            .map(|i| (format!("t{i}"), format!("{i}:a").into_bytes()))
            .collect();
        assert_eq!(
            got, expected,
            "{threads} threads, max_in_flight {max_in_flight}, chunk {chunk}, {count} messages"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_makes_callers_wait_or_answers_busy() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("slow", |_| {
        Behaviour::ok(Outcome::Unchanged).after(Duration::from_millis(100))
    });
    let o = start_with(
        &engine,
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: slow}]}]",
        options().max_in_flight(2),
    );
    let first = {
        let o = o.clone();
        tokio::spawn(async move {
            o.process_batch(vec![Message::new("t", ""); 2], ProcessOptions::default())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let busy = o.try_process_batch(vec![Message::new("t", "")], ProcessOptions::default());
    assert!(busy.is_err(), "two in flight already");
    // A waiting caller gets in once the first batch is done.
    let second = o
        .process_batch(vec![Message::new("t", "")], ProcessOptions::default())
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(first.await.unwrap().unwrap().len(), 2);
}

/// A message under way when its caller gives up runs to its end though it
/// waits for a retry's delay (the engine asks whether the batch is
/// cancelled before running it again), and is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waiting_for_a_retry_runs_to_its_end_after_its_caller_gave_up() {
    let engine = Arc::new(StandIn::new(1));
    let calls = Arc::new(AtomicUsize::new(0));
    engine.module("m", counted(&calls, flaky(1, ErrorKind::Trap)));
    let o = start_with(
        &engine,
        "pipeline_id: p\nerror_handling: RetryWithBackoff\nmax_retries: 1\nstages: [{priority: 0, modules: [{module_id: m}]}]",
        waits(100),
    );
    let given_up = tokio::time::timeout(
        Duration::from_millis(20),
        o.process_batch(vec![Message::new("t", "")], ProcessOptions::default()),
    )
    .await;
    assert!(given_up.is_err(), "the message was waiting for its retry");
    let waited = Instant::now();
    while calls.load(Ordering::SeqCst) < 2 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the retry never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Its result is counted once the batch has ended.
    let waited = Instant::now();
    loop {
        let text = scraped(&o);
        if text
            .lines()
            .any(|l| l == r#"rustmq_etl_messages_total{result="delivered"} 1"#)
        {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(10), "{text}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_frees_no_room_while_its_messages_run_and_stops_the_rest() {
    // One engine thread (the wave is one batch) and two (two batches, the
    // wave's permits split between them).
    for threads in [1, 2] {
        gives_up(threads).await;
    }
}

/// Two messages an engine thread, `threads` threads: the caller gives up
/// while each thread runs its first message.
async fn gives_up(threads: usize) {
    let engine = Arc::new(StandIn::new(threads));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    // The calls run until the test has looked (a fixed time was not always
    // enough under load), or at most 10 s.
    let release = Arc::new(AtomicBool::new(false));
    /// Lets the calls end however the test ends (a failed assertion too).
    struct Release(Arc<AtomicBool>);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let release_calls = Release(release.clone());
    engine.module("slow", move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        while !release.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        Behaviour::ok(Outcome::Unchanged)
    });
    let limit = 2 * threads;
    let o = start_with(
        &engine,
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: slow}]}]",
        options().max_in_flight(limit).chunk(2),
    );
    let given_up = tokio::time::timeout(
        Duration::from_millis(30),
        o.process_batch(
            vec![Message::new("t", ""); limit],
            ProcessOptions::default(),
        ),
    )
    .await;
    assert!(given_up.is_err(), "the first messages were still running");
    // Every message still holds its room: the first of each batch runs, the
    // second is not known yet not to.
    let busy = o
        .try_process_batch(vec![Message::new("t", "")], ProcessOptions::default())
        .err()
        .expect("no room while the given-up messages hold theirs");
    assert_eq!(
        (busy.batch, busy.in_flight, busy.limit, busy.never_fits()),
        (1, limit, limit, false),
        "{threads} threads"
    );
    assert!(
        busy.to_string()
            .contains(&format!("{limit} of at most {limit}")),
        "{busy}"
    );
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || o.publish_metrics());
    let in_flight = format!("rustmq_etl_messages_in_flight {limit}");
    assert!(
        handle.render().lines().any(|l| l == in_flight),
        "{}",
        handle.render()
    );
    drop(release_calls);
    // Once the first calls end, the batches stop: their second messages
    // never start, and the room comes back.
    let waited = Instant::now();
    let out = loop {
        match o.try_process_batch(vec![Message::new("u", "")], ProcessOptions::default()) {
            Ok(future) => break future.await.unwrap(),
            Err(busy) => {
                assert!(
                    waited.elapsed() < Duration::from_secs(10),
                    "still busy: {busy}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    assert!(matches!(out[0].disposition, Disposition::Delivered(_)));
    assert_eq!(
        calls.load(Ordering::Relaxed),
        threads + 1,
        "each given-up batch's first message and the new one ran; the second ones did not"
    );
    // The messages that ran count, whether or not anyone took their result;
    // those that never started count nowhere.
    metrics::with_local_recorder(&recorder, || o.publish_metrics());
    let delivered = format!(
        r#"rustmq_etl_messages_total{{result="delivered"}} {}"#,
        threads + 1
    );
    assert!(
        handle.render().lines().any(|l| l == delivered),
        "{delivered} missing from:\n{}",
        handle.render()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_limit_never_fits_the_non_blocking_call() {
    let o = one_passing_module(options().max_in_flight(2));
    let busy = o
        .try_process_batch(vec![Message::new("t", ""); 3], ProcessOptions::default())
        .err()
        .expect("three never fit in two");
    assert_eq!((busy.batch, busy.in_flight, busy.limit), (3, 0, 2));
    assert!(busy.never_fits());
    assert!(busy.to_string().contains("never fits"), "{busy}");
    // The waiting call runs it, in waves.
    let out = o
        .process_batch(vec![Message::new("t", ""); 3], ProcessOptions::default())
        .await
        .unwrap();
    assert_eq!(out.len(), 3);
    // A batch that fits: the non-blocking call's future owns what it needs
    // and may be spawned.
    let taken = o
        .try_process_batch(vec![Message::new("t", ""); 2], ProcessOptions::default())
        .unwrap();
    assert_eq!(tokio::spawn(taken).await.unwrap().unwrap().len(), 2);
}

/// Pipeline `p` of one stage of module `a`, which answers unchanged, on one
/// engine thread.
fn one_passing_module(options: Options) -> Orchestrator<StandIn> {
    let engine = Arc::new(StandIn::new(1));
    engine.module("a", |_| Behaviour::ok(Outcome::Unchanged));
    start_with(
        &engine,
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: a}]}]",
        options,
    )
}

#[test]
fn no_limit_is_the_semaphores_most() {
    let o = one_passing_module(options().max_in_flight(usize::MAX));
    let out = o
        .process_batch_blocking(vec![Message::new("t", ""); 3], ProcessOptions::default())
        .unwrap();
    assert_eq!(out.len(), 3);
}

#[test]
fn reloads_before_the_recorder_is_installed_are_published_after() {
    let o = one_passing_module(options());
    // No recorder is installed while these happen.
    assert_eq!(o.set_pipeline_enabled("p", false).unwrap().version, 2);
    assert!(!o.reload(&o.config()).unwrap().changed);
    let missing = config("pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: b}]}]");
    assert!(o.reload(&missing).is_err());
    let unknown = o.set_pipeline_enabled("q", true).unwrap_err();
    assert_eq!(
        unknown.to_string(),
        r#"the configuration was not applied: no pipeline "q""#
    );
    // A switch applied says nothing of the configuration asked for: the
    // rejected one still stands as the last reload.
    assert!(o.set_pipeline_enabled("p", true).unwrap().changed);
    let text = scraped(&o);
    for series in [
        "rustmq_etl_config_version 3",
        r#"rustmq_etl_reloads_total{result="applied"} 2"#,
        r#"rustmq_etl_reloads_total{result="unchanged"} 1"#,
        r#"rustmq_etl_reloads_total{result="rejected"} 1"#,
        // The last reload counted was rejected: the configuration in
        // service is not the one asked for.
        "rustmq_etl_config_last_reload_successful 0",
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "{series} missing from:\n{text}"
        );
    }
    let success_at = |text: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with("rustmq_etl_config_last_reload_success_timestamp_seconds "))
            .unwrap_or_else(|| panic!("no success timestamp in:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let before = success_at(&text);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(before > now - 60.0 && before <= now, "{before} vs {now}");
    std::thread::sleep(Duration::from_millis(20));
    assert!(!o.reload(&o.config()).unwrap().changed);
    let text = scraped(&o);
    assert!(
        text.lines()
            .any(|l| l == "rustmq_etl_config_last_reload_successful 1"),
        "{text}"
    );
    assert!(success_at(&text) > before, "{text}");
    // A rejection moves no success time, and one the caller counts itself
    // (`reload_rejected`: a file that did not load) reads 0 as well.
    let succeeded = success_at(&text);
    std::thread::sleep(Duration::from_millis(20));
    o.reload_rejected();
    let text = scraped(&o);
    for series in [
        "rustmq_etl_config_last_reload_successful 0",
        r#"rustmq_etl_reloads_total{result="rejected"} 2"#,
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "{series} missing from:\n{text}"
        );
    }
    assert_eq!(success_at(&text), succeeded, "{text}");
}

/// A reload loads only what it did not have: a module kept (same bytes,
/// same settings) is not compiled again, whatever else changed; a module
/// swapped for new bytes is, and keeps its breaker as it was (an open one
/// stays open until a probe succeeds on the new version).
#[test]
fn a_reload_loads_only_new_bytes_and_a_new_version_keeps_its_breaker() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("a", |m| {
        if &m.payload[..] == b"bad" {
            Behaviour::fail(ErrorKind::Trap, "bad")
        } else {
            set_header("a", "1")
        }
    });
    engine.module("b", |_| set_header("b", "1"));
    let bytes = Arc::new(std::sync::Mutex::new(b"1".to_vec()));
    let source = {
        let bytes = bytes.clone();
        move |id: &str| match id {
            "a" => Ok(bytes.lock().unwrap().clone()),
            _ => Ok(b"b".to_vec()),
        }
    };
    let yaml = |modules: &str| {
        config(&format!(
            "pipeline_id: p\nerror_handling: SkipModule\nstages: [{{priority: 0, modules: [{modules}]}}]"
        ))
    };
    let o = Orchestrator::new(
        engine.clone(),
        &yaml("{module_id: a}"),
        source,
        options().breaker(
            BreakerSettings::default()
                .failures(1)
                .cool_down(Duration::from_secs(60)),
        ),
    )
    .unwrap();
    let version_of_a = |o: &Orchestrator<StandIn>| {
        events(&one(o, Message::new("t", "ok")))
            .into_iter()
            .find_map(|(m, e)| match e {
                TraceEvent::Ran { version, .. } if m == "a" => Some(version),
                _ => None,
            })
            .expect("a ran")
    };
    let first = version_of_a(&o);
    // Another module added: `a` is kept as it was.
    let report = o.reload(&yaml("{module_id: a}, {module_id: b}")).unwrap();
    assert_eq!((report.changed, report.compiled), (true, 1));
    assert_eq!(version_of_a(&o), first);
    // `a` fails once: its breaker opens.
    one(&o, Message::new("t", "bad"));
    let circuit = |o: &Orchestrator<StandIn>| {
        o.occurrences()
            .into_iter()
            .find(|occurrence| occurrence.spec.id == "a")
            .unwrap()
            .circuit
    };
    assert_eq!(circuit(&o), rustmq_etl_orchestrator::CircuitState::Open);
    // New bytes: compiled anew, and its breaker still open.
    *bytes.lock().unwrap() = b"2".to_vec();
    let report = o.reload_modules().unwrap();
    assert_eq!((report.changed, report.compiled), (true, 1));
    assert_eq!(circuit(&o), rustmq_etl_orchestrator::CircuitState::Open);
    match &events(&one(&o, Message::new("t", "ok")))[0] {
        (m, TraceEvent::Failed { kind, .. }) if m == "a" => {
            assert_eq!(*kind, ErrorKind::CircuitOpen)
        }
        other => panic!("{other:?}"),
    }
}

/// A rejection the embedding program counts (`reload_rejected`) takes its
/// turn with reloads: asked while one runs, it is counted after it, and so
/// stands as the last reload (it was counted first, and the reload running
/// then read as the last).
#[test]
fn a_rejection_counted_during_a_reload_stands_as_the_last() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("a", append("a"));
    engine.module("b", append("b"));
    let (started, reading) = std::sync::mpsc::channel::<()>();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let source = move |id: &str| {
        if id == "b" {
            // The reload's read of `b`: held until the test says go.
            started.send(()).unwrap();
            wait.lock().unwrap().recv().unwrap();
        }
        Ok(Vec::new())
    };
    let yaml = |modules: &str| {
        config(&format!(
            "pipeline_id: p\nstages: [{{priority: 0, modules: [{modules}]}}]"
        ))
    };
    let o = Orchestrator::new(engine.clone(), &yaml("{module_id: a}"), source, options()).unwrap();
    std::thread::scope(|scope| {
        let reload = scope.spawn(|| o.reload(&yaml("{module_id: a}, {module_id: b}")));
        reading.recv().unwrap();
        let rejected = scope.spawn(|| o.reload_rejected());
        std::thread::sleep(Duration::from_millis(100));
        go.send(()).unwrap();
        assert!(reload.join().unwrap().unwrap().changed);
        rejected.join().unwrap();
    });
    let text = scraped(&o);
    for series in [
        "rustmq_etl_config_last_reload_successful 0",
        "rustmq_etl_config_version 2",
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "{series} missing from:\n{text}"
        );
    }
}

/// `process_batch_blocking` called (against its documentation) from a
/// tokio task: each wait spends the task's cooperative budget, and once it
/// is spent tokio puts off wake-ups until the task yields, which it never
/// does while blocked. 300 calls spend it twice over; they all end.
#[test]
fn a_blocking_call_from_an_async_task_ends() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("m", append("m"));
    let o = start(
        &engine,
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m}]}]",
    );
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let calls = runtime.block_on(async move {
            tokio::spawn(async move {
                (0..300)
                    .map(|_| {
                        o.process_batch_blocking(vec![Message::new("t", "")], Default::default())
                            .unwrap()
                            .len()
                    })
                    .sum::<usize>()
            })
            .await
            .unwrap()
        });
        let _ = done.send(calls);
    });
    // (A minute: the calls take milliseconds; on the old code they never
    // ended.)
    assert_eq!(finished.recv_timeout(Duration::from_secs(60)), Ok(300));
}

/// A `try_process_batch` batch runs on the configuration in service as it
/// was admitted, even if a reload comes before its future is polled.
#[tokio::test]
async fn a_batch_tried_runs_on_the_configuration_it_was_admitted_on() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("a", append("a"));
    engine.module("b", append("b"));
    let yaml = |module: &str| {
        config(&format!(
            "pipeline_id: p\nstages: [{{priority: 0, modules: [{{module_id: {module}}}]}}]"
        ))
    };
    let o = Orchestrator::new(engine.clone(), &yaml("a"), no_bytes, options()).unwrap();
    let tried = o
        .try_process_batch(vec![Message::new("t", "")], ProcessOptions::default())
        .ok()
        .unwrap();
    assert!(o.reload(&yaml("b")).unwrap().changed);
    let out = tried.await.unwrap().remove(0);
    assert_eq!(
        (&delivered(&out).payload[..], out.config_version),
        (&b"a"[..], 1)
    );
    let after = o.process(Message::new("t", "")).await.unwrap();
    assert_eq!(
        (&delivered(&after).payload[..], after.config_version),
        (&b"b"[..], 2)
    );
}

/// When the engine refuses a batch, the room of the wave's messages not yet
/// sent is given back at once, not once the batches sent have answered:
/// here, of four messages in batches of one, the first runs (held), the
/// second is refused, and only the first stays in flight while it runs.
#[test]
fn the_room_of_messages_not_sent_goes_when_the_engine_refuses() {
    let engine = StandIn::new(2);
    let (started, running) = std::sync::mpsc::channel::<()>();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (started, wait) = (std::sync::Mutex::new(started), std::sync::Mutex::new(wait));
    engine.module("held", move |_| {
        started.lock().unwrap().send(()).unwrap();
        wait.lock().unwrap().recv().unwrap();
        set_header("ran", "1")
    });
    // (It takes the first task and refuses the second.)
    let engine = Arc::new(Stopping {
        inner: engine,
        takes: AtomicUsize::new(1),
        lose: false,
    });
    let o = Orchestrator::new(
        engine,
        &config("pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: held}]}]"),
        no_bytes,
        options().chunk(1),
    )
    .unwrap();
    std::thread::scope(|scope| {
        let call = scope.spawn(|| {
            o.process_batch_blocking(vec![Message::new("t", ""); 4], ProcessOptions::default())
        });
        running.recv().unwrap();
        // (The refusal, and what follows it, come before the first batch's
        // answer: the caller waits for that answer only after them.)
        let deadline = Instant::now() + Duration::from_secs(10);
        while o.in_flight() != 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let in_flight = o.in_flight();
        // (Let go before asserting: a failure must not leave the call held.)
        go.send(()).unwrap();
        assert_eq!(in_flight, 1, "the refused batch's and the later ones' room");
        let stopped = call.join().unwrap().unwrap_err();
        assert_eq!((stopped.answered.len(), stopped.count), (1, 3));
    });
    assert_eq!(o.in_flight(), 0);
}

/// A module's file is read once for all its occurrences (the same
/// `module_id` under other settings), at the start and at each reload that
/// reads the files: one snapshot holds one version of it, even if its file
/// is replaced meanwhile.
#[test]
fn a_module_s_file_is_read_once_for_all_its_occurrences() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("m", append("m"));
    let reads = Arc::new(AtomicUsize::new(0));
    let counted = reads.clone();
    let source = move |_: &str| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok(Vec::new())
    };
    let yaml = config(
        "pipeline_id: p\nstages:\n  - {priority: 0, modules: [{module_id: m}]}\n  - \
         {priority: 1, modules: [{module_id: m, instance_config: {execution_timeout_ms: 500}}]}",
    );
    let o = Orchestrator::new(engine.clone(), &yaml, source, options()).unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 1);
    o.reload_modules().unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 2);
    let m = delivered(&one(&o, Message::new("t", ""))).clone();
    assert_eq!(&m.payload[..], b"mm");
}

/// A reload keeps every total: the counters of the pipelines and module
/// occurrences it keeps go on from where they were, and an occurrence taken
/// out and brought back finds its own again (execution.md, "Metrics").
#[test]
fn counters_keep_their_totals_across_reloads() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("m", |_| set_header("m", "1"));
    engine.module("n", |_| set_header("n", "1"));
    let with = |second: &str| {
        config(&format!(
            "pipelines:\n  - pipeline_id: p\n    stages: [{{priority: 0, modules: [{{module_id: m}}]}}]\n{second}"
        ))
    };
    let q = "  - pipeline_id: q\n    stages: [{priority: 0, modules: [{module_id: n}]}]\n";
    let o = Orchestrator::new(engine.clone(), &with(q), no_bytes, options()).unwrap();
    let send = |n: usize| {
        o.process_batch_blocking(vec![Message::new("t", ""); n], ProcessOptions::default())
            .unwrap();
    };
    let count = |series: &str| -> u64 {
        let text = scraped(&o);
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    let calls = |pipeline: &str, module: &str| {
        count(&format!(
            r#"rustmq_etl_module_calls_total{{pipeline="{pipeline}",module="{module}",outcome="edited"}}"#
        ))
    };
    send(3);
    // A change elsewhere (q switched off): p's series go on.
    o.set_pipeline_enabled("q", false).unwrap();
    send(1);
    assert_eq!(calls("p", "m"), 4);
    assert_eq!(
        count(r#"rustmq_etl_pipeline_messages_total{pipeline="p",result="processed"}"#),
        4
    );
    assert_eq!(calls("q", "n"), 3);
    // q taken out, then brought back: its totals are there again.
    o.reload(&with("")).unwrap();
    o.reload(&with(q)).unwrap();
    send(2);
    assert_eq!(calls("q", "n"), 5);
    assert_eq!(calls("p", "m"), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_never_runs() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("slow", |_| {
        Behaviour::ok(Outcome::Unchanged).after(Duration::from_millis(150))
    });
    engine.module("counted", |_| Behaviour::ok(Outcome::Unchanged));
    let yaml = r#"
pipeline_id: p
stages:
  - priority: 0
    modules:
      - {module_id: slow, topic_filters: [{filter_type: Exact, pattern: slow}]}
      - {module_id: counted, topic_filters: [{filter_type: Exact, pattern: counted}]}
"#;
    let o = start(&engine, yaml);
    // The only engine thread is busy with this one...
    let busy = {
        let o = o.clone();
        tokio::spawn(async move { o.process(Message::new("slow", "")).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    // ...while this call is queued behind it, then given up.
    let given_up = tokio::time::timeout(
        Duration::from_millis(20),
        o.process(Message::new("counted", "")),
    )
    .await;
    assert!(given_up.is_err(), "it was still queued");
    busy.await.unwrap().unwrap();
    // The queued batch was dropped unrun: a new call is the first to run.
    let out = o.process(Message::new("counted", "")).await.unwrap();
    assert!(matches!(out.disposition, Disposition::Delivered(_)));
    // Counted through the metrics: exactly one call of `counted`.
    let text = scraped(&o);
    assert!(
        text.lines().any(|l| l
            == r#"rustmq_etl_module_calls_total{pipeline="p",module="counted",outcome="unchanged"} 1"#),
        "{text}"
    );
}

#[test]
fn a_reload_is_atomic_and_an_invalid_one_keeps_the_old_configuration_serving() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("v1", |_| set_header("version", "1"));
    engine.module("v2", |_| set_header("version", "2"));
    engine.refuse("broken", "does not compile");
    let yaml = |m: &str| {
        format!("pipeline_id: p\nstages: [{{priority: 0, modules: [{{module_id: {m}}}]}}]")
    };
    let o = start(&engine, &yaml("v1"));
    assert_eq!(o.config_version(), 1);
    let err = o.reload(&config(&yaml("broken"))).unwrap_err();
    assert!(err.to_string().contains("does not compile"), "{err}");
    let out = one(&o, Message::new("t", ""));
    assert_eq!(
        (delivered(&out).headers.get("version"), out.config_version),
        (Some("1"), 1)
    );
    let report = o.reload(&config(&yaml("v2"))).unwrap();
    assert_eq!(
        (report.version, report.compiled, report.changed),
        (2, 1, true)
    );
    // The same again: nothing changed, the version stays.
    let report = o.reload(&config(&yaml("v2"))).unwrap();
    assert_eq!(
        (report.version, report.compiled, report.changed),
        (2, 0, false)
    );
    assert_eq!(o.reload_modules().unwrap().version, 2);
    let out = one(&o, Message::new("t", ""));
    assert_eq!(
        (delivered(&out).headers.get("version"), out.config_version),
        (Some("2"), 2)
    );
    // Switching a pipeline off is a reload too.
    o.set_pipeline_enabled("p", false).unwrap();
    let out = one(&o, Message::new("t", ""));
    assert_eq!(delivered(&out).headers.get("version"), None);
    assert_eq!(
        events(&out)[0].1,
        TraceEvent::Skipped(SkipReason::PipelineDisabled)
    );
    assert!(o.set_pipeline_enabled("nope", true).is_err());
}

/// A trace's notes (each skipped module's reasons: its filters run again)
/// take time that is not the stage's: a traced message meets the same
/// budget an untraced one does. Here the notes on 100 skipped modules, each
/// quoting a 256 KiB topic, take longer than the stage's 20 ms (44 ms in a
/// release build here, 230 ms in a debug one); the call that follows has the
/// rest of its 20 ms (it must end within them: an answer after the deadline
/// fails).
#[test]
fn a_traces_notes_do_not_spend_the_stages_budget() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("runs", |_| set_header("ran", "yes"));
    let skipped: Vec<String> = (0..100)
        .map(|i| {
            format!(
                "{{module_id: skipped{i}, topic_filters: [{{filter_type: Regex, pattern: b}}]}}"
            )
        })
        .collect();
    let o = start(
        &engine,
        &format!(
            "pipeline_id: p\nstages: [{{priority: 0, stage_timeout_ms: 20, modules: [{}, {{module_id: runs}}]}}]",
            skipped.join(", ")
        ),
    );
    let topic = "a".repeat(256 << 10);
    for trace in [false, true] {
        let out = o
            .process_batch_blocking(
                vec![Message::new(topic.as_str(), "")],
                ProcessOptions::default().trace(trace),
            )
            .unwrap()
            .remove(0);
        assert_eq!(
            delivered(&out).headers.get("ran"),
            Some("yes"),
            "traced: {trace}"
        );
        if trace {
            let events = events(&out);
            assert!(
                matches!(events[100].1, TraceEvent::Ran { attempts: 1, .. }),
                "{:?}",
                events[100]
            );
        }
    }
}

/// A switch or a module reload made while another reload compiles waits
/// for it and changes the configuration that reload put in service: neither
/// undoes the other.
#[test]
fn a_pipeline_switched_during_a_reload_keeps_that_reload() {
    use std::sync::{mpsc, Mutex};
    let engine = Arc::new(StandIn::new(2));
    engine.module("old", |_| set_header("version", "old"));
    engine.module("new", |_| set_header("version", "new"));
    engine.module("other", |_| set_header("other", "ran"));
    // Reading module `new` the first time waits until the test lets it go.
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let (reading, read) = mpsc::channel::<()>();
    let reading = Mutex::new(reading);
    let first = std::sync::atomic::AtomicBool::new(true);
    let source = move |module: &str| {
        if module == "new" && first.swap(false, Ordering::SeqCst) {
            reading.lock().unwrap().send(()).unwrap();
            released.lock().unwrap().recv().unwrap();
        }
        Ok(Vec::new())
    };
    let yaml = |m: &str| {
        format!(
            "pipelines:\n\
             - pipeline_id: p\n  stages: [{{priority: 0, modules: [{{module_id: {m}}}]}}]\n\
             - pipeline_id: q\n  stages: [{{priority: 0, modules: [{{module_id: other}}]}}]"
        )
    };
    let o = Orchestrator::new(engine.clone(), &config(&yaml("old")), source, options()).unwrap();
    std::thread::scope(|scope| {
        let reload = scope.spawn(|| o.reload(&config(&yaml("new"))).unwrap());
        // The reload is reading `new`: switch `q` off meanwhile.
        read.recv().unwrap();
        let switch = scope.spawn(|| o.set_pipeline_enabled("q", false).unwrap());
        let modules = scope.spawn(|| o.reload_modules().unwrap());
        std::thread::sleep(Duration::from_millis(50));
        release.send(()).unwrap();
        assert_eq!(reload.join().unwrap().version, 2);
        switch.join().unwrap();
        modules.join().unwrap();
    });
    let out = one(&o, Message::new("t", ""));
    let message = delivered(&out);
    assert_eq!(
        (message.headers.get("version"), message.headers.get("other")),
        (Some("new"), None),
        "the reload's module in service and q switched off"
    );
    assert_eq!(o.config_version(), 3, "the reload, then the switch");
}

#[test]
fn messages_in_flight_finish_on_the_configuration_they_started_with() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("v1", |_| {
        set_header("v", "1").after(Duration::from_millis(2))
    });
    engine.module("v1b", |_| set_header("w", "1"));
    engine.module("v2", |_| set_header("v", "2"));
    engine.module("v2b", |_| set_header("w", "2"));
    let yaml = |a: &str, b: &str| {
        format!(
            "pipeline_id: p\nstages:\n  - {{priority: 0, modules: [{{module_id: {a}}}]}}\n  - {{priority: 1, modules: [{{module_id: {b}}}]}}"
        )
    };
    let o = start(&engine, &yaml("v1", "v1b"));
    std::thread::scope(|scope| {
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let o = o.clone();
                scope.spawn(move || {
                    let mut all = Vec::new();
                    for _ in 0..20 {
                        all.extend(
                            o.process_batch_blocking(
                                vec![Message::new("t", ""); 8],
                                ProcessOptions::default(),
                            )
                            .unwrap(),
                        );
                    }
                    all
                })
            })
            .collect();
        for i in 0..10 {
            let (a, b) = if i % 2 == 0 {
                ("v2", "v2b")
            } else {
                ("v1", "v1b")
            };
            o.reload(&config(&yaml(a, b))).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        for sender in senders {
            for p in sender.join().unwrap() {
                let m = delivered(&p);
                // Both stages from one configuration, never half old, half new.
                assert_eq!(m.headers.get("v"), m.headers.get("w"), "{m:?}");
            }
        }
    });
}

/// A trace lists the modules in the configuration's order (pipelines in
/// order, stages by priority, modules as listed), one entry each, whether
/// they ran, were not selected or were skipped after a drop; in sequential
/// and parallel stages.
#[test]
fn a_trace_lists_the_modules_in_the_configurations_order() {
    let engine = Arc::new(StandIn::new(1));
    for name in ["a", "b", "c", "d", "e", "f", "g"] {
        engine.module(name, move |_| set_header(name, "1"));
    }
    engine.module("drop-on-x", |m| {
        if m.headers.get("x").is_some() {
            Behaviour::ok(Outcome::Dropped)
        } else {
            Behaviour::ok(Outcome::Unchanged)
        }
    });
    let not_here = "topic_filters: [{filter_type: Exact, pattern: elsewhere}]";
    let yaml = format!(
        r#"
pipelines:
  - pipeline_id: one
    stages:
      - priority: 0
        modules: [{{module_id: a}}, {{module_id: b, {not_here}}}, {{module_id: c}}]
      - priority: 1
        parallel_execution: true
        modules: [{{module_id: d, {not_here}}}, {{module_id: e}}, {{module_id: f, {not_here}}}]
  - pipeline_id: two
    stages:
      - priority: 0
        modules: [{{module_id: drop-on-x}}, {{module_id: g}}]
"#
    );
    let o = start(&engine, &yaml);
    let plan = ["a", "b", "c", "d", "e", "f", "drop-on-x", "g"];
    let mut dropped = Message::new("t", "");
    dropped.headers.push("x", "1");
    for message in [Message::new("t", ""), dropped] {
        let out = one(&o, message);
        let entries = &out.trace.as_ref().expect("traced").entries;
        let modules: Vec<&str> = entries.iter().map(|e| e.module.as_str()).collect();
        assert_eq!(modules, plan, "{entries:#?}");
        let indices: Vec<usize> = entries.iter().map(|e| e.index).collect();
        assert_eq!(indices, (0..plan.len()).collect::<Vec<_>>());
    }
}

mod undo {
    use std::sync::Mutex;

    use proptest::prelude::*;

    use super::*;

    /// Header edits of names the message may have entered with (and one
    /// that differs from one of them only in case), mixed with edits of
    /// other fields, so that an answer of few header edits may still take
    /// the bulk path of more than eight edits.
    fn edit() -> impl Strategy<Value = Edit> {
        let name = prop::sample::select(vec!["a", "A", "b", "c", "d"]);
        prop_oneof![
            4 => (name.clone(), "[0-9]").prop_map(|(n, v)| Edit::SetHeader(n.into(), v)),
            2 => name.prop_map(|n| Edit::RemoveHeader(n.into())),
            1 => "[a-z]{1,3}".prop_map(Edit::SetTopic),
            1 => "[0-9]".prop_map(|k| Edit::SetKey(Bytes::from(k))),
            1 => (0i64..9).prop_map(Edit::SetTimestamp),
        ]
    }

    fn answer() -> impl Strategy<Value = Vec<Edit>> {
        prop_oneof![
            3 => prop::collection::vec(edit(), 0..4),
            1 => prop::collection::vec(edit(), 0..20),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the edits before a failure (headers the message entered
        /// the pipeline with or not, few or many in one answer, in a parallel
        /// stage or in turn, after an earlier pipeline added its own), a
        /// stopped pipeline gives back the message exactly as it entered, and
        /// a dead letter holds it with the dead-letter headers after its own:
        /// the undo log copies the headers, or keeps how many were the
        /// entry's.
        #[test]
        fn a_failed_pipeline_gives_back_the_headers_whatever_was_edited(
            entry in prop::collection::vec((prop::sample::select(vec!["a", "b", "c"]), "[x-z]"), 0..4),
            before in answer(),
            edits in prop::collection::vec(answer(), 3),
            to_dead_letter in any::<bool>(),
        ) {
            let engine = Arc::new(StandIn::new(1));
            let answers = Arc::new(Mutex::new((before.clone(), edits)));
            engine.module("before", {
                let answers = answers.clone();
                move |_| Behaviour::ok(Outcome::Edited(answers.lock().unwrap().0.clone()))
            });
            for (i, name) in ["e0", "e1", "e2"].into_iter().enumerate() {
                let answers = answers.clone();
                engine.module(name, move |_| {
                    Behaviour::ok(Outcome::Edited(answers.lock().unwrap().1[i].clone()))
                });
            }
            engine.module("fail", |_| Behaviour::fail(ErrorKind::Trap, "trapped"));
            let strategy = if to_dead_letter { "SendToDeadLetter" } else { "StopPipeline" };
            let o = start(
                &engine,
                &format!(
                    r#"
pipelines:
  - pipeline_id: first
    stages: [{{priority: 0, modules: [{{module_id: before}}]}}]
  - pipeline_id: p
    error_handling: {strategy}
    stages:
      - {{priority: 0, parallel_execution: true, modules: [{{module_id: e0}}, {{module_id: e1}}]}}
      - {{priority: 1, modules: [{{module_id: e2}}]}}
      - {{priority: 2, modules: [{{module_id: fail}}]}}
"#
                ),
            );
            let mut message = Message::new("t", "p");
            entry.iter().for_each(|(n, v)| message.headers.push(*n, v.clone()));
            let out = one(&o, message.clone());
            // The message as it entered `p`: after `first`.
            message.apply(before);
            if to_dead_letter {
                let letter = dead_letter(&out);
                let headers: Vec<_> = letter.headers.iter().collect();
                let own: Vec<_> = message.headers.iter().collect();
                prop_assert!(headers.len() >= own.len());
                let (kept, added) = headers.split_at(own.len());
                prop_assert_eq!(kept, &own[..]);
                prop_assert!(added.iter().all(|(name, _)| name.starts_with("etl-dlq-")), "{:?}", added);
                prop_assert_eq!(&letter.payload, &message.payload);
                prop_assert_eq!(&letter.key, &message.key);
                prop_assert_eq!(letter.timestamp_ms, message.timestamp_ms);
            } else {
                prop_assert_eq!(delivered(&out), &message);
            }
        }
    }
}

/// A module that does not load as the orchestrator starts (here its start
/// fails: it may reject its `custom_config`; one that does not compile is
/// the same) is not loaded: unavailable, like one not found (execution.md:
/// "not loaded, not found"). A reload that still cannot load it keeps it so
/// and applies the rest; one that loads it puts it in service.
#[test]
fn a_module_that_does_not_start_is_unavailable_until_a_reload_loads_it() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("a", append("a"));
    engine.refuse("bad", "custom_config rejected");
    let yaml = |retries: u32| {
        format!(
            "pipeline_id: p\nerror_handling: SkipModule\nmax_retries: {retries}\n\
             stages: [{{priority: 0, modules: [{{module_id: bad}}, {{module_id: a}}]}}]"
        )
    };
    let o = start(&engine, &yaml(3));
    let unavailable = o.unavailable();
    assert_eq!(unavailable.len(), 1, "{unavailable:?}");
    assert_eq!(unavailable[0].module(), "bad");
    assert_eq!(unavailable[0].step(), rustmq_etl_core::LoadStep::Start);
    assert!(
        unavailable[0]
            .message()
            .starts_with("custom_config rejected (as listed in"),
        "{}",
        unavailable[0]
    );
    let out = one(&o, Message::new("t", ">"));
    assert_eq!(&delivered(&out).payload[..], b">a");
    match &events(&out)[0] {
        (
            m,
            TraceEvent::Failed {
                kind,
                error,
                action,
                ..
            },
        ) if m == "bad" => {
            assert_eq!(*kind, ErrorKind::Unavailable);
            assert_eq!(*action, FailureAction::Skipped);
            assert_eq!(error, "the module was not loaded: custom_config rejected");
        }
        other => panic!("{other:?}"),
    }

    // Still not loading: it stays unavailable and the rest applies.
    let report = o.reload(&config(&yaml(1))).unwrap();
    assert!(report.changed);
    assert_eq!(report.unavailable.len(), 1, "{report:?}");
    assert_eq!(o.config().pipelines()[0].pipeline.max_retries, 1);
    // The same configuration, the module failing for another reason: a new
    // version, whose calls say the new reason.
    engine.refuse("bad", "another reason");
    let report = o.reload(&config(&yaml(1))).unwrap();
    assert!(report.changed, "{report:?}");
    assert!(
        report.unavailable[0]
            .message()
            .starts_with("another reason"),
        "{report:?}"
    );
    match &events(&one(&o, Message::new("t", ">")))[0].1 {
        TraceEvent::Failed { error, .. } => {
            assert_eq!(error, "the module was not loaded: another reason")
        }
        other => panic!("{other:?}"),
    }
    // The same again, failing as before: nothing changed, nothing counted
    // as compiled, the version stays (a watcher's every event would make a
    // new one otherwise).
    let version = o.config_version();
    let report = o.reload(&config(&yaml(1))).unwrap();
    assert_eq!(
        (report.changed, report.compiled, report.version),
        (false, 0, version)
    );
    assert_eq!(o.reload_modules().unwrap().version, version);

    // Loading: in service.
    engine.module("bad", append("b"));
    let report = o.reload_modules().unwrap();
    assert_eq!((report.changed, report.compiled), (true, 1));
    assert!(o.unavailable().is_empty());
    assert_eq!(
        &delivered(&one(&o, Message::new("t", ">"))).payload[..],
        b">ba"
    );
}

/// A pipeline switched on or off is that change alone: it reads no module
/// file, so a file gone or changed on the disk meanwhile makes no
/// difference to it (a loaded module stays in service, an unavailable one
/// stays so), and the switch needs nothing from the disk. `reload_modules`
/// reads them.
#[test]
fn a_pipeline_switch_reads_no_module_file() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("a", append("a"));
    // The bytes of `a` on the disk (none: the file is gone); `missing`'s
    // file is never there.
    let bytes = Arc::new(std::sync::Mutex::new(Some(b"1".to_vec())));
    let reads = Arc::new(AtomicUsize::new(0));
    let source = {
        let (bytes, reads) = (bytes.clone(), reads.clone());
        move |id: &str| {
            reads.fetch_add(1, Ordering::SeqCst);
            match id {
                "a" => bytes
                    .lock()
                    .unwrap()
                    .clone()
                    .ok_or_else(|| "a is gone".to_owned()),
                _ => Err(format!("{id} was never there")),
            }
        }
    };
    let yaml = "pipelines:\n\
                - {pipeline_id: p, stages: [{priority: 0, modules: [{module_id: a}]}]}\n\
                - {pipeline_id: q, stages: [{priority: 0, modules: [{module_id: missing}]}]}\n";
    let o = Orchestrator::new(engine.clone(), &config(yaml), source, options()).unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 2);
    let unavailable = o.unavailable();
    assert_eq!(unavailable.len(), 1);

    *bytes.lock().unwrap() = None;
    let off = o.set_pipeline_enabled("q", false).unwrap();
    assert_eq!((off.version, off.changed, off.compiled), (2, true, 0));
    assert_eq!(off.unavailable, unavailable, "unavailable as it was");
    assert_eq!(
        &delivered(&one(&o, Message::new("t", ">"))).payload[..],
        b">a"
    );

    *bytes.lock().unwrap() = Some(b"2".to_vec());
    let on = o.set_pipeline_enabled("q", true).unwrap();
    assert_eq!((on.version, on.compiled), (3, 0));
    assert_eq!(reads.load(Ordering::SeqCst), 2, "no file read by a switch");

    // A module reload reads them: `a`'s new bytes go in service.
    let report = o.reload_modules().unwrap();
    assert_eq!((report.version, report.compiled), (4, 1));
    assert_eq!(reads.load(Ordering::SeqCst), 4);
    assert_eq!(report.unavailable.len(), 1);
}

/// execution.md: `unavailable` is the kind of a call of a module "not
/// loaded, not found". A module whose file cannot be read does not stop the
/// orchestrator: each call of it fails `unavailable`, handled by the
/// pipeline's strategy, and a reload that finds the file puts it in service.
#[test]
fn a_module_not_found_fails_its_calls_unavailable_until_a_reload_finds_it() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("a", |m| {
        Behaviour::ok(Outcome::Edited(vec![Edit::SetHeader(
            "a".into(),
            m.topic.to_string(),
        )]))
    });
    engine.module("late", |_| {
        Behaviour::ok(Outcome::Edited(vec![Edit::SetHeader(
            "late".into(),
            "ran".into(),
        )]))
    });
    let there = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let source = {
        let there = there.clone();
        move |id: &str| {
            if id == "late" && !there.load(Ordering::SeqCst) {
                Err(format!(
                    "cannot read modules/{id}.wasm: No such file or directory"
                ))
            } else {
                Ok(Vec::new())
            }
        }
    };
    let yaml = |strategy: &str| {
        format!(
            "pipeline_id: p\nerror_handling: {strategy}\nmax_retries: 2\n\
             stages: [{{priority: 0, modules: [{{module_id: a}}]}}, \
             {{priority: 1, modules: [{{module_id: late}}]}}]"
        )
    };
    // The failures below open the breaker (5 by default); the module found
    // at last starts with a closed one.
    let o = Orchestrator::new(
        engine.clone(),
        &config(&yaml("SendToDeadLetter")),
        source,
        options(),
    )
    .unwrap();
    let unavailable = o.unavailable();
    assert_eq!(unavailable.len(), 1);
    assert_eq!(unavailable[0].module(), "late");
    assert_eq!(unavailable[0].step(), rustmq_etl_core::LoadStep::Read);
    assert!(
        unavailable[0]
            .message()
            .contains(r#"as listed in pipeline "p", stage 1"#),
        "{}",
        unavailable[0]
    );
    let occurrences = o.occurrences();
    assert_eq!(occurrences[0].unavailable, None);
    assert!(occurrences[1]
        .unavailable
        .as_deref()
        .unwrap()
        .contains("No such file"));
    let text = scraped(&o);
    for series in [
        "rustmq_etl_modules_unavailable 1",
        r#"rustmq_etl_module_unavailable{module="late"} 1"#,
        r#"rustmq_etl_module_unavailable{module="a"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "{series} missing from:\n{text}"
        );
    }

    // A dead letter of the entry, naming the kind; the module before ran.
    let out = one(&o, Message::new("t", "x"));
    let letter = dead_letter(&out);
    assert_eq!(
        letter.headers.get("a"),
        None,
        "the entry, not the edited message"
    );
    assert_eq!(letter.headers.get(dlq::ERROR_KIND), Some("unavailable"));
    assert_eq!(letter.headers.get(dlq::MODULE), Some("late"));
    assert_eq!(letter.headers.get(dlq::STAGE), Some("1"));
    assert_eq!(letter.headers.get(dlq::ATTEMPTS), Some("1"));
    assert!(letter
        .headers
        .get(dlq::ERROR)
        .unwrap()
        .contains("No such file"));

    // Retryable, as every kind but the timeouts and the breaker's.
    o.reload(&config(&yaml("RetryWithBackoff"))).unwrap();
    let out = one(&o, Message::new("t", "x"));
    assert_eq!(dead_letter(&out).headers.get(dlq::ATTEMPTS), Some("3"));

    // Skipped: the message goes on as it was before the module.
    let report = o.reload(&config(&yaml("SkipModule"))).unwrap();
    assert_eq!(report.unavailable.len(), 1);
    let out = one(&o, Message::new("t", "x"));
    assert_eq!(delivered(&out).headers.get("a"), Some("t"));
    assert!(matches!(
        &events(&out)[1],
        (m, TraceEvent::Failed { kind: ErrorKind::Unavailable, action: FailureAction::Skipped, .. })
            if m == "late"
    ));

    // A reload never makes a module unavailable: one more without its file
    // is refused, and the version in service keeps serving.
    let more = "pipeline_id: p\nerror_handling: SkipModule\nstages: [\
        {priority: 0, modules: [{module_id: a}]}, {priority: 1, modules: [{module_id: late}]}, \
        {priority: 2, modules: [{module_id: late, instance_config: {custom_config: {x: 1}}}]}]";
    let refused = o.reload(&config(more)).unwrap_err();
    // The cause, not the module already unavailable in service.
    assert_eq!(refused.errors.len(), 1, "{refused}");
    assert!(
        refused.errors[0].message().contains(
            "a reload does not put a module in service that does not load \
             (as listed in pipeline \"p\", stage 2; settings"
        ),
        "{refused}"
    );
    assert_eq!(o.config().pipelines()[0].pipeline.stages.len(), 2);
    // The same configuration with the file still missing changes nothing;
    // with the file there, the module is in service.
    assert!(!o.reload(&o.config()).unwrap().changed);
    assert_eq!(
        o.occurrences()[1].circuit,
        rustmq_etl_orchestrator::CircuitState::Open
    );
    // Taken out of the configuration, then back with its file there: a
    // closed breaker all the same.
    let without = "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: a}]}]";
    assert!(o.reload(&config(without)).unwrap().changed);
    there.store(true, Ordering::SeqCst);
    let report = o.reload(&config(&yaml("SkipModule"))).unwrap();
    assert!(
        report.changed && report.unavailable.is_empty(),
        "{report:?}"
    );
    assert!(o.unavailable().is_empty());
    assert_eq!(
        o.occurrences()[1].circuit,
        rustmq_etl_orchestrator::CircuitState::Closed
    );
    let out = one(&o, Message::new("t", "x"));
    assert_eq!(delivered(&out).headers.get("late"), Some("ran"));
    let text = scraped(&o);
    for series in [
        "rustmq_etl_modules_unavailable 0",
        r#"rustmq_etl_module_unavailable{module="late"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "{series} missing from:\n{text}"
        );
    }
}

/// A module found by a reload of the same configuration starts with a closed
/// breaker, whatever its absence opened.
#[test]
fn a_module_found_by_reloading_the_same_configuration_starts_closed() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("late", |_| Behaviour::ok(Outcome::Unchanged));
    let there = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let source = {
        let there = there.clone();
        move |_: &str| {
            if there.load(Ordering::SeqCst) {
                Ok(Vec::new())
            } else {
                Err("cannot read modules/late.wasm: No such file or directory".to_owned())
            }
        }
    };
    let yaml = "pipeline_id: p\nerror_handling: SendToDeadLetter\n\
                stages: [{priority: 0, modules: [{module_id: late}]}]";
    let o = Orchestrator::new(engine, &config(yaml), source, options()).unwrap();
    for _ in 0..5 {
        dead_letter(&one(&o, Message::new("t", "x")));
    }
    use rustmq_etl_orchestrator::CircuitState;
    assert_eq!(o.occurrences()[0].circuit, CircuitState::Open);
    there.store(true, Ordering::SeqCst);
    let report = o.reload(&o.config()).unwrap();
    assert!(report.changed && report.compiled == 1, "{report:?}");
    assert_eq!(o.occurrences()[0].circuit, CircuitState::Closed);
    delivered(&one(&o, Message::new("t", "x")));
}

/// A trace's `queued` is each message's own wait: its batch's for an engine
/// thread, then the messages before it in the batch (it was the batch's, the
/// same for all of them).
#[test]
fn a_trace_says_how_long_each_message_waited_before_it_began() {
    let engine = Arc::new(StandIn::new(1));
    let slow = Duration::from_millis(20);
    engine.module("m", move |_| Behaviour::ok(Outcome::Unchanged).after(slow));
    let o = start(
        &engine,
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m}]}]",
    );
    let out = o
        .process_batch_blocking(
            vec![Message::new("t", "x"); 3],
            ProcessOptions::default().in_order(true).trace(true),
        )
        .unwrap();
    let queued: Vec<Duration> = out
        .iter()
        .map(|p| p.trace.as_ref().expect("traced").queued)
        .collect();
    // The second began after the first's call, the third after two.
    assert!(queued[1] >= queued[0] + slow, "{queued:?}");
    assert!(queued[2] >= queued[1] + slow, "{queued:?}");
}

/// `options()` says the limits in force: a `max_in_flight` of 0 acts as 1
/// and "no limit" as the semaphore's most, as `Busy` reports them, and a
/// `chunk` of 0 as 1.
#[test]
fn the_options_in_force_are_the_limits_as_they_act() {
    let o = one_passing_module(options().max_in_flight(0).chunk(0));
    assert_eq!((o.options().max_in_flight, o.options().chunk), (1, 1));
    let busy = o
        .try_process_batch(vec![Message::new("t", ""); 2], ProcessOptions::default())
        .err()
        .expect("two never fit in one");
    assert_eq!(busy.limit, o.options().max_in_flight);
    let o = one_passing_module(options().max_in_flight(usize::MAX));
    let most = o.options().max_in_flight;
    assert!(
        most < usize::MAX && most >= u32::MAX as usize >> 3,
        "{most}"
    );
    assert!(o
        .try_process_batch(vec![Message::new("t", ""); 2], ProcessOptions::default())
        .is_ok());
}

/// Registers module `id` on `engine`: each call holds its engine thread
/// until the flag answered is set (or 10 s have passed).
fn held_until_released(engine: &StandIn, id: &str) -> Arc<AtomicBool> {
    held_until_released_noting(engine, id, || {})
}

/// [`held_until_released`], each call first calling `noting`.
fn held_until_released_noting(
    engine: &StandIn,
    id: &str,
    noting: impl Fn() + Send + Sync + 'static,
) -> Arc<AtomicBool> {
    let release = Arc::new(AtomicBool::new(false));
    let held = release.clone();
    engine.module(id, move |_| {
        noting();
        let started = Instant::now();
        while !held.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        Behaviour::ok(Outcome::Unchanged)
    });
    release
}

/// `drain` returns once no message is in flight, not before, and takes no
/// room meanwhile (it took it all, so that `in_flight` read the limit and
/// others were refused `Busy` while it waited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_the_messages_in_flight() {
    let engine = Arc::new(StandIn::new(1));
    let release = held_until_released(&engine, "slow");
    let o = start(
        &engine,
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: slow}]}]",
    );
    let sender = o.clone();
    let batch = tokio::spawn(async move {
        sender
            .process_batch(vec![Message::new("t", ""); 2], ProcessOptions::default())
            .await
    });
    in_flight_reaches(&o, 2).await;
    let drainer = o.clone();
    let drain = tokio::spawn(async move { drainer.drain().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !drain.is_finished(),
        "drain returned with 2 messages in flight"
    );
    // It takes no room: the count stays true, and others are admitted.
    assert_eq!(o.in_flight(), 2);
    let admitted = o
        .try_process_batch(vec![Message::new("t", ""); 1], ProcessOptions::default())
        .expect("room for one more");
    drop(admitted);
    release.store(true, Ordering::Relaxed);
    drain.await.unwrap();
    assert_eq!(o.in_flight(), 0);
    assert_eq!(batch.await.unwrap().unwrap().len(), 2);
    // With nothing in flight it returns at once.
    o.drain().await;
    // A non-blocking call's future not polled holds its room: waited for
    // until it is dropped (or polled to its end).
    let held = o
        .try_process_batch(vec![Message::new("t", ""); 2], ProcessOptions::default())
        .expect("room for two");
    let drainer = o.clone();
    let drain = tokio::spawn(async move { drainer.drain().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!drain.is_finished(), "drain returned with room held");
    drop(held);
    drain.await.unwrap();
    assert_eq!(o.in_flight(), 0);
}

/// An orchestrator of one module that holds every call until released,
/// with room for `max_in_flight` messages; and the release.
fn held(max_in_flight: usize) -> (Orchestrator<StandIn>, Arc<AtomicBool>) {
    let engine = Arc::new(StandIn::new(1));
    let release = held_until_released(&engine, "slow");
    let o = start_with(
        &engine,
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: slow}]}]",
        options().max_in_flight(max_in_flight),
    );
    (o, release)
}

/// Returns once `o` has `n` messages in flight.
async fn in_flight_reaches(o: &Orchestrator<StandIn>, n: usize) {
    while o.in_flight() < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `n` messages sent to `o` by a task of their own.
fn sent(
    o: &Orchestrator<StandIn>,
    n: usize,
) -> tokio::task::JoinHandle<Result<Vec<Processed>, rustmq_etl_orchestrator::EngineStopped>> {
    let o = o.clone();
    tokio::spawn(async move {
        o.process_batch(vec![Message::new("t", ""); n], ProcessOptions::default())
            .await
    })
}

/// A caller waiting for room, handed it as another batch ends, then dropped
/// before it ran (cancelled): the room goes back without a batch. Room handed
/// to a caller not yet admitted is not in flight: `in_flight` and a drain
/// count only the messages admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_a_cancelled_caller_held_goes_back() {
    use std::future::Future;
    let (o, release) = held(1);
    let first = sent(&o, 1);
    in_flight_reaches(&o, 1).await;
    // The second waits for room: polled once, then never again.
    let mut second =
        Box::pin(o.process_batch(vec![Message::new("t", "")], ProcessOptions::default()));
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(second.as_mut().poll(&mut context).is_pending());
    release.store(true, Ordering::Relaxed);
    first.await.unwrap().unwrap();
    // The first's room went to the second, which has not taken it up: not
    // in flight, and nothing for a drain to wait for; but no room for others.
    assert_eq!(o.in_flight(), 0);
    tokio::time::timeout(Duration::from_secs(10), o.drain())
        .await
        .expect("nothing admitted to wait for");
    let busy = o
        .try_process_batch(vec![Message::new("t", "")], ProcessOptions::default())
        .err()
        .expect("the room is the second caller's");
    assert_eq!((busy.in_flight, busy.held_for_waiting), (0, 1));
    assert_eq!(o.waiting(), 1);
    assert_eq!(
        busy.to_string(),
        "busy: 0 of at most 1 messages are in flight and callers waiting for room hold 1 place, no room for 1 more"
    );
    drop(second);
    assert_eq!(
        (o.in_flight(), o.waiting()),
        (0, 0),
        "the cancelled caller waits no more"
    );
    let answered = o
        .try_process_batch(vec![Message::new("t", "")], ProcessOptions::default())
        .expect("the room came back")
        .await
        .unwrap();
    assert_eq!(answered.len(), 1);
}

/// Room given back goes to the callers waiting, in the order they asked:
/// a large batch waiting holds what comes back until it has all it needs,
/// and a small one behind it waits too, though the messages in flight are
/// fewer than the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waiting_for_room_comes_first() {
    let (o, release) = held(4);
    let first = sent(&o, 3);
    in_flight_reaches(&o, 3).await;
    // Three more wait; the one place free goes to them.
    let second = sent(&o, 3);
    let waited = Instant::now();
    loop {
        match o.try_process_batch(vec![Message::new("t", "")], ProcessOptions::default()) {
            Err(busy) if busy.held_for_waiting == 1 => {
                assert_eq!(busy.in_flight, 3);
                break;
            }
            Err(_) => {}
            Ok(_) => assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the second batch never asked"
            ),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(o.in_flight(), 3, "the waiting batch is not in flight");
    assert_eq!(o.waiting(), 3, "but waiting");
    // The gauges say the same.
    let text = scraped(&o);
    for line in [
        "rustmq_etl_messages_in_flight 3",
        "rustmq_etl_messages_waiting 3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    release.store(true, Ordering::Relaxed);
    assert_eq!(first.await.unwrap().unwrap().len(), 3);
    assert_eq!(second.await.unwrap().unwrap().len(), 3);
    assert_eq!((o.in_flight(), o.waiting()), (0, 0));
}

/// A batch on the caller's own thread runs there, not on an engine thread,
/// and takes room as any other: it waits while the messages in flight fill
/// it, counted as waiting, and is counted in flight while it runs.
#[test]
fn on_this_thread_runs_here_and_waits_for_room() {
    let (o, release_slow) = held(2);
    let ran_on = Arc::new(std::sync::Mutex::new(Vec::new()));
    let release_here = held_until_released_noting(o.engine(), "here", {
        let ran_on = ran_on.clone();
        move || ran_on.lock().unwrap().push(std::thread::current().id())
    });
    o.reload(&config(
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: slow, topic_filters: [{filter_type: Exact, pattern: slow}]}, {module_id: here, topic_filters: [{filter_type: Exact, pattern: here}]}]}]",
    ))
    .unwrap();
    // One place of two is taken by a message held in the slow module.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let first = runtime.spawn({
        let o = o.clone();
        async move {
            o.process_batch(vec![Message::new("slow", "")], ProcessOptions::default())
                .await
        }
    });
    let until = |done: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(10), "never came");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    until(&|| o.in_flight() == 1);
    let here = std::thread::spawn({
        let o = o.clone();
        move || {
            let mut here = o.on_this_thread().unwrap();
            let out = here.process_batch(
                vec![Message::new("here", "1"), Message::new("here", "2")],
                ProcessOptions::default(),
            );
            (out, std::thread::current().id())
        }
    });
    until(&|| o.waiting() == 2);
    assert!(ran_on.lock().unwrap().is_empty(), "it waits for room");
    release_slow.store(true, Ordering::Relaxed);
    // Admitted whole, and in flight while its first message runs.
    until(&|| !ran_on.lock().unwrap().is_empty());
    assert_eq!((o.in_flight(), o.waiting()), (2, 0));
    release_here.store(true, Ordering::Relaxed);
    let (out, thread) = here.join().unwrap();
    let payloads: Vec<_> = out.iter().map(|p| delivered(p).payload.clone()).collect();
    assert_eq!(payloads, [Bytes::from("1"), Bytes::from("2")]);
    assert_eq!(*ran_on.lock().unwrap(), [thread, thread]);
    runtime.block_on(first).unwrap().unwrap();
    assert_eq!((o.in_flight(), o.waiting()), (0, 0));
}

/// On the caller's thread, a message waiting for a retry's delay does not
/// hold up the batch's others, and the thread waits out the delay itself.
#[test]
fn on_this_thread_a_retry_waits_and_the_others_go_on() {
    let engine = Arc::new(StandIn::new(1));
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    engine.module("flaky", {
        let calls = calls.clone();
        move |m| {
            let mut calls = calls.lock().unwrap();
            calls.push((m.payload.clone(), std::thread::current().id()));
            if m.payload == "flaky" && calls.len() == 1 {
                Behaviour::fail(ErrorKind::GuestError, "once")
            } else {
                Behaviour::ok(Outcome::Unchanged)
            }
        }
    });
    let o = start_with(
        &engine,
        "pipeline_id: p\nerror_handling: RetryWithBackoff\nmax_retries: 1\nstages: [{priority: 0, modules: [{module_id: flaky}]}]",
        waits(50),
    );
    let mut here = o.on_this_thread().unwrap();
    let started = Instant::now();
    let out = here.process_batch(
        vec![Message::new("t", "flaky"), Message::new("t", "steady")],
        ProcessOptions::default().trace(true),
    );
    // The delay (50 ms, up to half taken off by jitter) was waited out.
    assert!(started.elapsed() >= Duration::from_millis(25));
    let attempts = |p: &Processed| match &events(p)[0].1 {
        TraceEvent::Ran { attempts, .. } => *attempts,
        other => panic!("{other:?}"),
    };
    assert_eq!(delivered(&out[0]).payload, "flaky");
    assert_eq!((attempts(&out[0]), attempts(&out[1])), (2, 1));
    // The steady message ran while the other waited for its retry, all on
    // this thread.
    let here = std::thread::current().id();
    assert_eq!(
        *calls.lock().unwrap(),
        [("flaky", here), ("steady", here), ("flaky", here)].map(|(p, t)| (Bytes::from(p), t))
    );
}

/// A caller's runner is readied for the modules in service before its first
/// batch, and again for each configuration put in service after, not for
/// every batch.
#[test]
fn on_this_thread_readies_its_runner_for_the_modules_in_service() {
    let engine = Arc::new(StandIn::new(1));
    for id in ["a", "b"] {
        engine.module(id, |_| Behaviour::ok(Outcome::Unchanged));
    }
    let o = start(
        &engine,
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: a}, {module_id: b}]}]",
    );
    let mut here = o.on_this_thread().unwrap();
    assert!(engine.prepared().is_empty(), "readied as it first runs");
    for _ in 0..2 {
        here.process_batch(vec![Message::new("t", "")], ProcessOptions::default());
    }
    assert_eq!(engine.prepared(), ["a", "b"]);
    o.set_pipeline_enabled("p", false).unwrap();
    here.process_batch(vec![Message::new("t", "")], ProcessOptions::default());
    assert_eq!(engine.prepared(), ["a", "b", "a", "b"]);
}

/// A stand-in engine that stops taking tasks once told to: it gives each
/// task after that back (`submit`'s `Err`, as an engine shutting down does)
/// or, with `lose`, takes it and drops it unrun (as a failure of the host
/// outside what an engine contains loses it).
struct Stopping {
    inner: StandIn,
    /// Tasks it still takes (counted down once stopping).
    takes: AtomicUsize,
    lose: bool,
}

impl rustmq_etl_core::Engine for Stopping {
    type Module = <StandIn as rustmq_etl_core::Engine>::Module;
    type Runner = <StandIn as rustmq_etl_core::Engine>::Runner;

    fn load(
        &self,
        spec: &rustmq_etl_core::ModuleSpec,
        bytes: &[u8],
    ) -> Result<Self::Module, rustmq_etl_core::LoadError> {
        self.inner.load(spec, bytes)
    }

    fn version(module: &Self::Module) -> u64 {
        StandIn::version(module)
    }

    fn submit(
        &self,
        task: Box<dyn rustmq_etl_core::Task<Self::Runner>>,
    ) -> Result<(), Box<dyn rustmq_etl_core::Task<Self::Runner>>> {
        let taken = self
            .takes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        match (taken, self.lose) {
            (Ok(_), _) => self.inner.submit(task),
            (Err(_), true) => {
                drop(task);
                Ok(())
            }
            (Err(_), false) => Err(task),
        }
    }

    fn threads(&self) -> usize {
        self.inner.threads()
    }
}

/// `EngineStopped`: an engine that refuses an engine batch's task, or takes
/// it and loses it, fails the call with the results of the messages before
/// that batch (`answered`, in input order, as the call would have returned
/// them) and the count of the rest; the room the call took comes back (a
/// task's own room when the engine drops it, that of a task taken as it
/// ends), so that `drain` returns and a later call is admitted. Engine
/// batches of one message, waves of two: a batch of two is one wave of two
/// tasks, a batch of six three such waves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_engine_answers_for_the_messages_before_and_gives_the_room_back() {
    for lose in [false, true] {
        let calls = Arc::new(AtomicUsize::new(0));
        let inner = StandIn::new(2);
        let counted = calls.clone();
        inner.module("a", move |m| {
            counted.fetch_add(1, Ordering::Relaxed);
            append("a")(m)
        });
        let engine = Arc::new(Stopping {
            inner,
            takes: AtomicUsize::new(usize::MAX),
            lose,
        });
        let o = Orchestrator::new(
            engine.clone(),
            &config("pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: a}]}]"),
            no_bytes,
            options().chunk(1).max_in_flight(2),
        )
        .unwrap();
        let messages = |n: usize| -> Vec<Message> {
            (0..n).map(|i| Message::new("t", i.to_string())).collect()
        };
        let all = o
            .process_batch(messages(6), ProcessOptions::default())
            .await
            .unwrap();
        assert_eq!(all.len(), 6, "lose: {lose}");
        // (takes, messages) → how many answered.
        for (takes, n, answered) in [(1, 2, 1), (3, 6, 3), (4, 6, 4), (0, 6, 0)] {
            let before = calls.load(Ordering::Relaxed);
            engine.takes.store(takes, Ordering::Relaxed);
            let stopped = o
                .process_batch(messages(n), ProcessOptions::default())
                .await
                .unwrap_err();
            let case = format!("lose: {lose}, takes {takes} of {n}");
            assert_eq!(stopped.answered, all[..answered], "{case}");
            assert_eq!(stopped.count, n - answered, "{case}");
            assert_eq!(
                stopped.to_string(),
                format!(
                    "the engine gave no answer for {} messages: it stopped, or failed while \
                     running them (see its log); some may have run",
                    n - answered
                )
            );
            tokio::time::timeout(Duration::from_secs(10), o.drain())
                .await
                .unwrap_or_else(|_| panic!("the room did not come back ({case})"));
            assert_eq!(o.in_flight(), 0, "{case}");
            // The tasks taken ran, each to its end: nothing else did.
            assert_eq!(calls.load(Ordering::Relaxed) - before, takes, "{case}");
        }
        // The non-blocking call alike.
        engine.takes.store(0, Ordering::Relaxed);
        let stopped = o
            .try_process_batch(messages(2), ProcessOptions::default())
            .expect("room for two")
            .await
            .unwrap_err();
        assert_eq!((stopped.answered.len(), stopped.count), (0, 2));
        assert_eq!(o.in_flight(), 0, "lose: {lose}");
    }
}

/// A pipeline timeout under `continue_on_error` ends the pipeline and
/// delivers the message as it stands — with the edits made before it, as
/// under `SkipModule` — whatever the pipeline's strategy (not as it entered,
/// as `StopPipeline` alone would give it back), and the next pipeline
/// receives it; a stage timeout under it ends the stage, and the next stage
/// runs.
#[test]
fn a_timeout_under_continue_on_error_goes_on_with_the_message_as_it_stands() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("quick", |_| set_header("quick", "1"));
    engine.module("slow", |_| {
        set_header("late", "1").after(Duration::from_secs(5))
    });
    engine.module("later", |_| set_header("later", "1"));
    engine.module("next", |_| set_header("next", "1"));
    for strategy in ["StopPipeline", "SendToDeadLetter", "RetryWithBackoff"] {
        // (250 ms: `quick` must answer within it, on a loaded machine too.)
        for (budget, kind, action, later) in [
            (
                "global_timeout_ms: 250",
                ErrorKind::PipelineTimeout,
                FailureAction::EndedPipeline,
                None,
            ),
            (
                "stage_timeout_ms: 250",
                ErrorKind::StageTimeout,
                FailureAction::EndedStage,
                Some("1"),
            ),
        ] {
            let (pipeline_budget, stage_budget) = if kind == ErrorKind::PipelineTimeout {
                (budget, "")
            } else {
                ("", budget)
            };
            let yaml = format!(
                r#"
pipelines:
  - pipeline_id: p
    error_handling: {strategy}
    {pipeline_budget}
    stages:
      - priority: 0
        continue_on_error: true
        {stage_budget}
        modules: [{{module_id: quick}}, {{module_id: slow}}]
      - priority: 1
        modules: [{{module_id: later}}]
  - pipeline_id: q
    stages: [{{priority: 0, modules: [{{module_id: next}}]}}]
"#
            );
            let o = start(&engine, &yaml);
            let out = one(&o, Message::new("t", ""));
            let case = format!("{strategy}, {budget}");
            let m = delivered(&out);
            assert_eq!(m.headers.get("quick"), Some("1"), "{case}");
            assert_eq!(m.headers.get("late"), None, "{case}");
            assert_eq!(m.headers.get("later"), later, "{case}");
            assert_eq!(m.headers.get("next"), Some("1"), "{case}");
            let events = events(&out);
            match &events[1] {
                (
                    module,
                    TraceEvent::Failed {
                        kind: k,
                        action: a,
                        attempts: 1,
                        ..
                    },
                ) if module == "slow" && *k == kind && *a == action => {}
                other => panic!("{case}: {other:?}"),
            }
            if later.is_none() {
                assert_eq!(
                    events[2].1,
                    TraceEvent::Skipped(SkipReason::EarlierFailure),
                    "{case}"
                );
            }
        }
    }
}

/// A call gets the tightest of what the stage's and the pipeline's budgets
/// leave it: here the pipeline's, spent in part by an earlier stage, is
/// tighter than the stage's own, and the module fails `pipeline_timeout`;
/// with a looser pipeline budget, the stage's fires.
#[test]
fn a_call_gets_the_tightest_of_the_stage_and_pipeline_budgets() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("first", |_| {
        set_header("first", "1").after(Duration::from_millis(50))
    });
    engine.module("slow", |_| {
        set_header("late", "1").after(Duration::from_secs(5))
    });
    for (global, kind) in [(100, "pipeline_timeout"), (1_000, "stage_timeout")] {
        let yaml = format!(
            r#"
pipeline_id: p
error_handling: SendToDeadLetter
global_timeout_ms: {global}
stages:
  - priority: 0
    modules: [{{module_id: first}}]
  - priority: 1
    stage_timeout_ms: 90
    modules: [{{module_id: slow}}]
"#
        );
        let o = start(&engine, &yaml);
        let out = one(&o, Message::new("t", ""));
        let letter = dead_letter(&out);
        assert_eq!(
            letter.headers.get(dlq::ERROR_KIND),
            Some(kind),
            "global {global}"
        );
    }
}

/// A pipeline of `module` retried three times under `budget`: the
/// pipeline's `global_timeout_ms: N` or its one stage's `stage_timeout_ms: N`.
fn retried_within(budget: &str, module: &str) -> String {
    let (pipeline_budget, stage_budget) = if budget.starts_with("global") {
        (budget, "")
    } else {
        ("", budget)
    };
    format!(
        "pipeline_id: p\nerror_handling: RetryWithBackoff\nmax_retries: 3\n{pipeline_budget}\n\
         stages:\n  - priority: 0\n    {stage_budget}\n    modules: [{{module_id: {module}}}]\n"
    )
}

/// A retry's wait never outlasts the budget left: with waits of 4 s
/// against a budget of 100 ms, the pipeline's (or the stage's) time runs out
/// during the first wait, and the message is dead-lettered then, not
/// seconds later, after one call.
#[test]
fn a_retry_s_wait_ends_when_the_budget_does() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("m", |_| Behaviour::fail(ErrorKind::Trap, "always"));
    for (budget, kind) in [
        ("global_timeout_ms: 100", "pipeline_timeout"),
        ("stage_timeout_ms: 100", "stage_timeout"),
    ] {
        let o = start_with(&engine, &retried_within(budget, "m"), waits(4_000));
        let started = Instant::now();
        let out = one(&o, Message::new("t", ""));
        // Jitter takes off half a wait at most: 2 s at the least.
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "{budget}: {:?}",
            started.elapsed()
        );
        let letter = dead_letter(&out);
        assert_eq!(letter.headers.get(dlq::ERROR_KIND), Some(kind), "{budget}");
        assert_eq!(letter.headers.get(dlq::ATTEMPTS), Some("1"), "{budget}");
    }
}

/// Retry n waits `base × factor^(n−1)` less up to half (jitter), through the
/// engine: with a base of 20 ms and a factor of 4, the second wait is 40 ms
/// at the least, where waits that did not grow would be 20 ms at the most.
/// A module that ran records, in its trace, the time of all its calls.
#[test]
fn retry_waits_grow_by_the_backoff_factor() {
    let engine = Arc::new(StandIn::new(1));
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let noted = calls.clone();
    engine.module("m", move |_| {
        let mut calls = noted.lock().unwrap();
        calls.push(Instant::now());
        if calls.len() < 3 {
            Behaviour::fail(ErrorKind::Trap, "not yet").after(Duration::from_millis(10))
        } else {
            set_header("ok", "1").after(Duration::from_millis(10))
        }
    });
    let backoff = Backoff::default()
        .base(Duration::from_millis(20))
        .factor(4)
        .cap(Duration::from_secs(1));
    let o = start_with(&engine, RETRIED, Options::default().backoff(backoff));
    let out = one(&o, Message::new("t", ""));
    assert_eq!(delivered(&out).headers.get("ok"), Some("1"));
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 3);
    // Each gap is a 10 ms call and then the wait.
    let (first, second) = (calls[1] - calls[0], calls[2] - calls[1]);
    assert!(first >= Duration::from_millis(20), "{first:?}");
    assert!(second >= Duration::from_millis(50), "{second:?}");
    match events(&out)[0].1 {
        TraceEvent::Ran {
            attempts: 3, time, ..
        } => {
            assert!(
                time >= Duration::from_millis(30),
                "3 calls of 10 ms: {time:?}"
            )
        }
        ref other => panic!("{other:?}"),
    }
}

/// A timeout of the stage or the pipeline is never retried, even under
/// `RetryWithBackoff` with retries left: the module was called once, the
/// dead letter quotes that call's failure, and no retry is counted.
#[test]
fn a_stage_or_pipeline_timeout_in_a_call_is_not_retried() {
    let engine = Arc::new(StandIn::new(2));
    engine.module("slow", |_| {
        set_header("late", "1").after(Duration::from_secs(5))
    });
    for (budget, kind) in [
        ("global_timeout_ms: 50", "pipeline_timeout"),
        ("stage_timeout_ms: 50", "stage_timeout"),
    ] {
        let o = start(&engine, &retried_within(budget, "slow"));
        let out = one(&o, Message::new("t", ""));
        let letter = dead_letter(&out);
        assert_eq!(letter.headers.get(dlq::ERROR_KIND), Some(kind), "{budget}");
        assert_eq!(letter.headers.get(dlq::ATTEMPTS), Some("1"), "{budget}");
        assert_eq!(
            letter.headers.get(dlq::ERROR),
            Some("ran past its deadline"),
            "{budget}"
        );
        let scrape = scraped(&o);
        let retries: Vec<&str> = scrape
            .lines()
            .filter(|l| l.starts_with("rustmq_etl_module_retries_total{"))
            .collect();
        assert!(
            retries.iter().all(|l| l.ends_with(" 0")),
            "{budget}: {retries:?}"
        );
    }
}

/// A probe call that could not start (the module had no instance free:
/// `Busy`) is given back, not spent: the message waits, its probe then runs
/// and succeeds, and the breaker closes (kept, the breaker would stay
/// half-open and refuse every call for ever).
#[test]
fn a_probe_that_could_not_start_is_given_back() {
    let engine = Arc::new(StandIn::new(1));
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    engine.module("m", move |_| match counted.fetch_add(1, Ordering::SeqCst) {
        0 => Behaviour::fail(ErrorKind::Trap, "down"),
        1 => Behaviour::busy(Instant::now() + Duration::from_millis(20)),
        _ => set_header("ok", "1"),
    });
    let o = start_with(
        &engine,
        "pipeline_id: p\nerror_handling: SkipModule\nstages: [{priority: 0, modules: [{module_id: m}]}]",
        options().breaker(
            BreakerSettings::default()
                .failures(1)
                .cool_down(Duration::from_millis(20)),
        ),
    );
    let out = one(&o, Message::new("t", ""));
    assert_eq!(delivered(&out).headers.get("ok"), None);
    assert_eq!(
        o.occurrences()[0].circuit,
        rustmq_etl_orchestrator::CircuitState::Open
    );
    std::thread::sleep(Duration::from_millis(30));
    let out = one(&o, Message::new("t", ""));
    assert_eq!(
        delivered(&out).headers.get("ok"),
        Some("1"),
        "{:?}",
        out.trace
    );
    assert_eq!(
        o.occurrences()[0].circuit,
        rustmq_etl_orchestrator::CircuitState::Closed
    );
    let out = one(&o, Message::new("t", ""));
    assert_eq!(delivered(&out).headers.get("ok"), Some("1"));
}

/// Times are published in seconds, each sample once: a module that takes
/// 50 ms reads about 0.05 in the `_sum` of its module's, its stage's and its
/// pipeline's histograms (a sample is published as its bucket's middle, an
/// eighth off at most; 50 would be milliseconds), and publishing again to the
/// same recorder adds no sample.
#[test]
fn times_are_published_in_seconds_and_each_sample_once() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("m", |_| {
        set_header("m", "1").after(Duration::from_millis(50))
    });
    let o = start(
        &engine,
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m}]}]",
    );
    assert_eq!(
        delivered(&one(&o, Message::new("t", ""))).headers.get("m"),
        Some("1")
    );
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || o.publish_metrics());
    let first = handle.render();
    metrics::with_local_recorder(&recorder, || o.publish_metrics());
    let second = handle.render();
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
    };
    for histogram in [
        r#"rustmq_etl_module_duration_seconds_{}{pipeline="p",module="m"}"#,
        r#"rustmq_etl_stage_duration_seconds_{}{pipeline="p",priority="0"}"#,
        r#"rustmq_etl_pipeline_duration_seconds_{}{pipeline="p"}"#,
    ] {
        let sum = value(&first, &histogram.replace("{}", "sum"));
        assert!((0.043..5.0).contains(&sum), "{histogram}: {sum}");
        let count = histogram.replace("{}", "count");
        assert_eq!(value(&first, &count), 1.0, "{count}");
        assert_eq!(value(&second, &count), 1.0, "{count}, published again");
    }
}

/// A stage's time is recorded under its own priority, whatever the order
/// the stages are declared in: the stage of priority 1 (declared second)
/// runs first, for every message, and drops half of them; the stage of
/// priority 5 runs for the other half.
#[test]
fn a_stage_s_time_is_recorded_under_its_own_priority() {
    let engine = Arc::new(StandIn::new(1));
    engine.module("dropper", |m: &Message| match &m.payload[..] {
        b"drop" => Behaviour::ok(Outcome::Dropped),
        _ => Behaviour::ok(Outcome::Unchanged),
    });
    engine.module("m", |_| set_header("m", "1"));
    let o = start(
        &engine,
        "pipeline_id: p\nstages: [{priority: 5, modules: [{module_id: m}]}, {priority: 1, modules: [{module_id: dropper}]}]",
    );
    let messages = ["drop", "keep", "drop", "keep"]
        .map(|p| Message::new("t", p))
        .to_vec();
    let out = o
        .process_batch_blocking(messages, ProcessOptions::default())
        .unwrap();
    assert_eq!(
        out.iter()
            .filter(|p| matches!(p.disposition, Disposition::Dropped))
            .count(),
        2
    );
    let text = scraped(&o);
    for line in [
        r#"rustmq_etl_stage_duration_seconds_count{pipeline="p",priority="1"} 4"#,
        r#"rustmq_etl_stage_duration_seconds_count{pipeline="p",priority="5"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}
