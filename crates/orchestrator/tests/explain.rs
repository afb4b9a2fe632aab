//! Selection on the shipped fixtures: design.md's examples.

use std::path::PathBuf;

use rustmq_etl_config::Config;
use rustmq_etl_core::Message;
use rustmq_etl_orchestrator::Plan;

fn plan() -> Plan {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../../fixtures/pipelines");
    Plan::build(&Config::load(&dir).unwrap().config).unwrap()
}

fn run(plan: &Plan, line: &str) -> (Vec<String>, Vec<String>) {
    let message = Message::from_json_line(line).unwrap();
    let mut scratch = plan.create_scratch();
    let e = plan.explain(&message, 1_764_201_600_000, &mut scratch);
    (
        e.modules
            .iter()
            .map(|m| format!("{}/{}/{}", m.pipeline, m.priority, m.module))
            .collect(),
        e.skipped
            .iter()
            .map(|s| format!("{}: {}", s.module, s.reason))
            .collect(),
    )
}

#[test]
fn iot_temperature_reading_in_celsius() {
    let (modules, skipped) = run(
        &plan(),
        r#"{"topic": "iot.sensors.temperature", "payload": {"sensor_type": "temperature", "unit": "celsius", "reading": 21.5}}"#,
    );
    assert_eq!(
        modules,
        [
            "iot-sensor-processing/0/sensor-data-validator",
            "iot-sensor-processing/1/temperature-converter"
        ]
    );
    assert_eq!(skipped.len(), 5, "{skipped:#?}");
    assert_eq!(
        skipped[0],
        r#"pressure-normalizer: no topic filter accepts topic "iot.sensors.temperature": Exact "iot.sensors.pressure" does not match"#
    );
    assert_eq!(
        skipped[1],
        r#"message-validator: no topic filter accepts topic "iot.sensors.temperature": Wildcard "events.*" (case-insensitive) does not match"#
    );
}

#[test]
fn events_with_json_content_type_and_client_ip() {
    let (modules, skipped) = run(
        &plan(),
        r#"{"topic": "Events.Web.content", "headers": {"content-type": "application/json", "client_ip": "10.0.0.1"}, "payload": {}}"#,
    );
    // Regex ^(events|logs)\.(mobile|web)\. is case-sensitive: geolocation is skipped.
    assert_eq!(
        modules,
        [
            "message-enrichment-pipeline/0/message-validator",
            "message-enrichment-pipeline/1/content-analyzer"
        ]
    );
    assert!(skipped
        .iter()
        .any(|s| s.starts_with("geolocation-enricher: no topic filter accepts")));
    assert!(skipped.iter().any(|s| s.starts_with(r#"message-formatter: no topic filter accepts topic "Events.Web.content": Exact "*" (case-insensitive) does not match"#)));
}

#[test]
fn failing_rules_are_named() {
    let (modules, skipped) = run(
        &plan(),
        r#"{"topic": "iot.sensors.pressure", "payload": {"sensor_type": "pressure", "reading": -1}}"#,
    );
    assert!(modules.is_empty(), "{modules:?}");
    assert!(skipped.contains(
        &r#"sensor-data-validator: conditional rule 1 (`payload field $.sensor_type Contains "temperature"`) does not hold: payload field $.sensor_type is "pressure""#.to_owned()
    ));
    assert!(skipped.contains(
        &"pressure-normalizer: conditional rule 1 (`payload field $.reading GreaterThan 0`) does not hold: payload field $.reading is -1".to_owned()
    ));
}

/// A reason quotes what it found in the message, cut to a hundred
/// characters: a trace names why each module was not selected, and one
/// long topic, header or payload value must not be copied into each.
#[test]
fn reasons_quote_long_values_cut_short() {
    let topic = format!("iot.{}", "t".repeat(10_000));
    let line = serde_json::json!({
        "topic": topic,
        "headers": {"content-type": "x".repeat(10_000)},
        "payload": {"sensor_type": "s".repeat(10_000), "unit": vec!["u"; 2_000]},
    })
    .to_string();
    let (_, skipped) = run(&plan(), &line);
    assert!(!skipped.is_empty());
    for reason in &skipped {
        assert!(reason.len() < 1_000, "{reason}");
    }
    assert!(
        skipped
            .iter()
            .any(|r| r.contains(&format!("topic \"iot.{}\"… (10004 bytes)", "t".repeat(96)))),
        "{skipped:#?}"
    );
}

/// Payload rules read the payload as serde_json does: JSON nested deeper
/// than 128 levels or holding a number past f64's range is "not JSON" to
/// them (RFC 8259 lets a reader set such limits), so no field is found and
/// the rules do not hold; the reason says which limit it was.
#[test]
fn a_payload_past_serde_jsons_limits_is_not_json_and_the_reason_says_why() {
    let reading = |pad: &str| {
        format!(
            r#"{{"topic": "iot.sensors.temperature", "payload": {{"sensor_type": "temperature", "unit": "celsius", "reading": 1, "pad": {pad}}}}}"#
        )
    };
    let (modules, _) = run(&plan(), &reading("1e300"));
    assert_eq!(modules.len(), 2, "{modules:?}");
    for (pad, why) in [
        (
            "1e400".to_owned(),
            "the payload is not JSON: number out of range",
        ),
        (
            format!("{}{}", "[".repeat(130), "]".repeat(130)),
            "the payload is not JSON: nested deeper than 128 levels",
        ),
    ] {
        let (modules, skipped) = run(&plan(), &reading(&pad));
        assert!(modules.is_empty(), "{modules:?}");
        assert!(skipped.iter().any(|r| r.contains(why)), "{skipped:#?}");
    }
}

/// A scratch kept across plans (one per thread, kept over a reload) gives
/// each plan's own answer (it indexed the other plan's tables: a panic, or a
/// wrong answer).
#[test]
fn a_scratch_from_another_plan_gives_this_plans_answer() {
    let build = |yaml: &str| {
        Plan::build(
            &Config::from_text(yaml, rustmq_etl_config::Format::Yaml, None)
                .unwrap()
                .config,
        )
        .unwrap()
    };
    let one = build("pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m}]}]");
    let negated = |pattern: &str| {
        format!(
            "{{module_id: {pattern}, topic_filters: [{{filter_type: Prefix, pattern: {pattern}., negate: true}}]}}"
        )
    };
    let three = build(&format!(
        "pipeline_id: p\nstages: [{{priority: 0, modules: [{}, {}, {}]}}]",
        negated("a"),
        negated("b"),
        negated("c")
    ));
    let shipped = plan();
    let messages = [
        Message::new("iot.sensors.temperature", r#"{"unit": "celsius"}"#),
        Message::new("c.d", ""),
        Message::new("web.events", r#"{"content_type": "application/json"}"#),
    ];
    let mut kept = one.create_scratch();
    for plan in [&one, &three, &shipped, &one, &shipped, &three] {
        for message in &messages {
            let fresh = plan.explain(message, 0, &mut plan.create_scratch());
            let reused = plan.explain(message, 0, &mut kept);
            assert_eq!(reused, fresh, "{:?}", message.topic);
        }
    }
}

/// What the orchestrator's API names is reachable through it alone: a
/// warning's severity, a planned pipeline's strategy, a module's settings
/// (an embedding program needs no other of this project's crates).
#[test]
fn the_api_names_nothing_an_embedder_cannot_reach_through_it() {
    use rustmq_etl_orchestrator::config::ErrorHandlingStrategy;
    use rustmq_etl_orchestrator::{Config as Loadable, Format as TextFormat, Severity};
    let loaded = Loadable::from_text(
        "pipeline_id: p\nerror_handling: SkipModule\nstages: [{priority: 0, modules: \
         [{module_id: m, topic_filters: [{filter_type: Exact, pattern: \"*\"}]}]}]",
        TextFormat::Yaml,
        None,
    )
    .unwrap();
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.severity == Severity::Warning));
    let plan = Plan::build(&loaded.config).unwrap();
    assert_eq!(
        plan.pipelines()[0].config.error_handling,
        ErrorHandlingStrategy::SkipModule
    );
    let settings: &rustmq_etl_orchestrator::ModuleSettings = &plan.occurrences()[0].settings;
    assert!(settings.enable_caching);
    fn is_a_step(_: rustmq_etl_orchestrator::engine::Step) {}
    is_a_step(rustmq_etl_orchestrator::engine::Step::Done);
}

/// The modules `yaml` (one stage of modules, each with its filters or rules)
/// selects for `line` at `now_ms`, by id.
fn selected(yaml_modules: &str, line: &str, now_ms: i64) -> Vec<String> {
    let yaml = format!("pipeline_id: p\nstages:\n  - priority: 0\n    modules:\n{yaml_modules}");
    let plan = Plan::build(
        &Config::from_text(&yaml, rustmq_etl_config::Format::Yaml, None)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
            .config,
    )
    .unwrap();
    let message = Message::from_json_line(line).unwrap();
    plan.explain(&message, now_ms, &mut plan.create_scratch())
        .modules
        .iter()
        .map(|m| m.module.clone())
        .collect()
}

/// selection.md's operators and filter types, each from the configuration's
/// own names (the reference proptests build their rules through the same
/// conversion, so a name mapped to the wrong operator would pass them):
/// hand examples with the answers the spec's words give.
#[test]
fn every_operator_and_filter_type_named_in_a_configuration_does_what_the_spec_says() {
    let line = r#"{"topic": "a^bc.d", "headers": {"n": "7"}, "payload": {"n": 5, "s": "az", "r": 21.5, "t": "42", "x": "1", "tags": ["abc"]}}"#;
    let rule = |id: &str, path: &str, operator: &str, value: &str| {
        format!(
            "      - {{module_id: {id}, conditional_rules: [{{condition_type: PayloadField, field_path: '{path}', operator: {operator}, value: {value}}}]}}\n"
        )
    };
    let cases = [
        // Ordering: numbers against numbers only.
        rule("ge", "$.n", "GreaterThanOrEqual", "5"),
        rule("le", "$.n", "LessThanOrEqual", "5"),
        rule("gt-not", "$.n", "GreaterThan", "5"),
        rule("lt-not", "$.n", "LessThan", "5"),
        rule("r-gt", "$.r", "GreaterThan", "3"),
        rule("r-gt-string-not", "$.r", "GreaterThan", "'1'"),
        rule("t-gt-not", "$.t", "GreaterThan", "1"),
        // Strings: the end, the start.
        rule("ends", "$.s", "EndsWith", "z"),
        rule("starts-not", "$.s", "StartsWith", "z"),
        rule("n-ends-not", "$.n", "EndsWith", "'5'"),
        // Equality across types: a string is not a number.
        rule("x-ne", "$.x", "NotEquals", "1"),
        rule("x-eq-not", "$.x", "Equals", "1"),
        // Contains on an array: an element equal to the value.
        rule("tags-elem", "$.tags", "Contains", "abc"),
        rule("tags-substring-not", "$.tags", "Contains", "b"),
        rule("n-matches-not", "$.n", "Matches", "'5'"),
        // Filters.
        "      - {module_id: contains, topic_filters: [{filter_type: Contains, pattern: '^b'}]}\n"
            .to_owned(),
        "      - {module_id: suffix, topic_filters: [{filter_type: Suffix, pattern: '.d'}]}\n"
            .to_owned(),
        "      - {module_id: prefix-not, topic_filters: [{filter_type: Prefix, pattern: 'b'}]}\n"
            .to_owned(),
        "      - {module_id: any-negated, topic_filters: [{filter_type: Exact, pattern: 'a^bc.d'}, {filter_type: Exact, pattern: 'zz', negate: true}]}\n"
            .to_owned(),
        // A header read as a number.
        "      - {module_id: header-ge, conditional_rules: [{condition_type: HeaderValue, field_path: n, operator: GreaterThanOrEqual, value: 7}]}\n"
            .to_owned(),
    ];
    let got = selected(&cases.concat(), line, 0);
    assert_eq!(
        got,
        [
            "ge",
            "le",
            "r-gt",
            "ends",
            "x-ne",
            "tags-elem",
            "contains",
            "suffix",
            "any-negated",
            "header-ge"
        ]
    );
}

/// A wildcard matches the whole topic, `?` exactly one character (any one,
/// a dot or a letter beyond ASCII too).
#[test]
fn a_wildcard_matches_the_whole_topic_and_a_question_mark_one_character() {
    let wildcard = |pattern: &str| {
        format!("      - {{module_id: w, topic_filters: [{{filter_type: Wildcard, pattern: '{pattern}'}}]}}\n")
    };
    for (pattern, topic, selects) in [
        ("a?c", "a.c", true),
        ("a?c", "aéc", true),
        ("a?c", "xabc", false),
        ("a?c", "ac", false),
        ("events.*", "events.web", true),
        ("events.*", "my.events.web", false),
    ] {
        let line = format!(r#"{{"topic": "{topic}", "payload": ""}}"#);
        assert_eq!(
            selected(&wildcard(pattern), &line, 0) == ["w"],
            selects,
            "{pattern} on {topic}"
        );
    }
}

/// selection.md's examples of `case_sensitive: false` (Unicode simple case
/// folding: `LOGS.app` and `Prefix "logs."`, `ΟΔΟΣ` and `Contains "σ"`, the
/// Kelvin sign and `k`), each case-sensitive too, and folding's limits: `ß`
/// folds to no `ss`, a regex's `(?i)`.
#[test]
fn case_insensitive_filters_fold_as_the_spec_s_examples_say() {
    let filter = |filter_type: &str, pattern: &str, case_sensitive: bool| {
        format!("      - {{module_id: f, topic_filters: [{{filter_type: {filter_type}, pattern: '{pattern}', case_sensitive: {case_sensitive}}}]}}\n")
    };
    for (filter_type, pattern, topic, folded, exact) in [
        ("Prefix", "logs.", "LOGS.app", true, false),
        ("Contains", "σ", "ΟΔΟΣ", true, false),
        ("Contains", "σ", "οδος", true, false),
        ("Exact", "k", "\u{212A}", true, false),
        ("Exact", "\u{212A}", "K", true, false),
        ("Suffix", "ss", "STRAß", false, false),
        ("Exact", "straße", "STRAẞE", true, false),
        ("Regex", "^ΟΔΟΣ$", "οδος", true, false),
        ("Wildcard", "logs.*", "Logs.App", true, false),
        ("Prefix", "logs.", "logs.app", true, true),
    ] {
        let line = format!(r#"{{"topic": "{topic}", "payload": ""}}"#);
        for (case_sensitive, selects) in [(false, folded), (true, exact)] {
            assert_eq!(
                selected(&filter(filter_type, pattern, case_sensitive), &line, 0) == ["f"],
                selects,
                "{filter_type} {pattern:?} on {topic:?}, case_sensitive: {case_sensitive}"
            );
        }
    }
}

/// MessageAge is `now − timestamp_ms`, in milliseconds, at the time given
/// (explain's `--now`); a message without a timestamp has no age.
#[test]
fn message_age_is_now_less_the_timestamp_in_milliseconds() {
    let age = |operator: &str, value: i64| {
        format!("      - {{module_id: a, conditional_rules: [{{condition_type: MessageAge, operator: {operator}, value: {value}}}]}}\n")
    };
    let line = r#"{"topic": "t", "payload": "", "timestamp_ms": 400000}"#;
    assert_eq!(selected(&age("Equals", 600_000), line, 1_000_000), ["a"]);
    assert!(selected(&age("Equals", 600), line, 1_000_000).is_empty());
    assert_eq!(
        selected(&age("GreaterThan", 599_999), line, 1_000_000),
        ["a"]
    );
    let untimed = r#"{"topic": "t", "payload": ""}"#;
    assert!(selected(&age("GreaterThanOrEqual", 0), untimed, 1_000_000).is_empty());
}
