//! The compiled `ConditionSet` against the plain reference, on selection.md's
//! cases and on generated rules and messages.

mod reference;

use proptest::prelude::*;
use rustmq_etl_condition::{ConditionSetBuilder, Operator, Rule, Subject};
use rustmq_etl_core::{Bytes, Headers, Message};
use serde_json::{json, Value};

const NOW: i64 = 1_764_201_600_000;

fn message(headers: &[(&str, &str)], payload: &str, timestamp_ms: Option<i64>) -> Message {
    Message {
        topic: "t".into(),
        key: Some(Bytes::from_static(b"k")),
        headers: headers.iter().copied().collect(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        timestamp_ms,
    }
}

fn rule(subject: Subject, operator: Operator, value: Value, negate: bool) -> Rule {
    Rule::new(subject, operator, value, negate).unwrap()
}

/// Checks each rule alone against the reference and the expectation.
fn check(message: &Message, cases: &[(Rule, bool)]) {
    let mut builder = ConditionSetBuilder::new();
    let groups: Vec<_> = cases
        .iter()
        .map(|(r, _)| builder.add_group([r.clone()]))
        .collect();
    let set = builder.build();
    let mut scratch = set.create_scratch();
    let mut context = set.context(message, NOW, &mut scratch);
    for ((rule, want), group) in cases.iter().zip(groups) {
        let got = context.holds(group);
        assert_eq!(
            reference::holds(rule, message, NOW),
            got,
            "reference disagrees on `{rule}` for {message:?}"
        );
        assert_eq!(got, *want, "`{rule}` for {message:?}");
        assert_eq!(context.first_failure(group).is_none(), got);
    }
}

#[test]
fn selection_md_cases() {
    use Operator::*;
    let h = |name: &str| Subject::HeaderValue(name.into());
    let p = |path: &str| Subject::payload_field(path).unwrap();
    let m = message(
        &[
            ("n", "10"),
            ("f", "1.0"),
            ("b", "true"),
            ("s", "application/json"),
            ("n", "12"),
        ],
        r#"{"sensor_type": "temperature-x", "unit": "celsius", "reading": 21.5, "count": 1,
            "tags": ["a", 2, {"k": 1}], "flag": false, "nested": {"a b": [null]}, "text": "42"}"#,
        Some(NOW - 250),
    );
    check(
        &m,
        &[
            // headers: last wins; numbers and booleans from strings
            (rule(h("n"), Equals, json!(12), false), true),
            (rule(h("n"), Equals, json!("10"), false), false),
            (rule(h("f"), Equals, json!(1), false), true),
            (rule(h("b"), Equals, json!(true), false), true),
            (rule(h("b"), Equals, json!("true"), false), true),
            (rule(h("n"), GreaterThan, json!(9), false), true),
            (rule(h("n"), GreaterThan, json!("9"), false), false), // "12" < "9" by bytes
            (rule(h("s"), Contains, json!("json"), false), true),
            (rule(h("s"), StartsWith, json!("application/"), false), true),
            (rule(h("s"), Matches, json!("^app.*json$"), false), true),
            (
                rule(h("S"), Equals, json!("application/json"), false),
                false,
            ),
            // no subject: false for every operator, NotEquals too; negate flips
            (rule(h("absent"), NotEquals, json!("x"), false), false),
            (rule(h("absent"), Equals, json!("x"), true), true),
            // payload fields keep their JSON types
            (
                rule(p("$.sensor_type"), Contains, json!("temperature"), false),
                true,
            ),
            (rule(p("unit"), Equals, json!("celsius"), false), true),
            (rule(p("$.reading"), GreaterThan, json!(0), false), true),
            (rule(p("$.count"), Equals, json!(1.0), false), true),
            (rule(p("$.text"), Equals, json!(42), false), false),
            (rule(p("$.flag"), Equals, json!(false), false), true),
            (rule(p("$.flag"), Equals, json!("false"), false), false),
            (rule(p("$.tags"), Contains, json!(2.0), false), true),
            (rule(p("$.tags"), Contains, json!({"k": 1}), false), true),
            (rule(p("$.tags[1]"), LessThanOrEqual, json!(2), false), true),
            (
                rule(p("$.nested['a b'][0]"), Equals, json!(null), false),
                true,
            ),
            (
                rule(p("$.nested.missing"), NotEquals, json!(1), false),
                false,
            ),
            (rule(p("$.reading"), StartsWith, json!("2"), false), false),
            // size and age
            (
                rule(Subject::MessageSize, GreaterThan, json!(100), false),
                true,
            ),
            (rule(Subject::MessageAge, Equals, json!(250), false), true),
            (
                rule(Subject::MessageAge, LessThan, json!(1000), false),
                true,
            ),
        ],
    );
    let mut invalid_utf8 = message(&[], "", None);
    invalid_utf8.payload = Bytes::from_static(b"{\"a\": 1, \"b\": \"\xff\"}");
    check(
        &invalid_utf8,
        &[(rule(p("$.a"), Equals, json!(1), false), false)],
    );
    let not_json = message(&[], "{oops", None);
    check(
        &not_json,
        &[
            (rule(p("$.a"), NotEquals, json!(1), false), false),
            (rule(p("$"), Equals, json!("{oops"), false), false),
            (rule(Subject::MessageAge, LessThan, json!(1), false), false),
            (rule(Subject::MessageAge, LessThan, json!(1), true), true),
            (rule(Subject::MessageSize, Equals, json!(6), false), true),
        ],
    );
}

/// What serde_json refuses to parse into a `Value` anywhere in the payload —
/// a number too large for an `f64`, a lone surrogate escape, nesting past its
/// limit — makes the whole payload not JSON, even in a member no rule names.
#[test]
fn a_payload_serde_json_refuses_anywhere_is_not_json() {
    let a_is_1 = rule(
        Subject::payload_field("$.a").unwrap(),
        Operator::Equals,
        json!(1),
        false,
    );
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for payload in [
        r#"{"a": 1, "b": 1e400}"#.to_owned(),
        r#"{"a": 1, "b": "\ud800"}"#.to_owned(),
        r#"{"a": 1, "b": "\udc00 and after"}"#.to_owned(),
        format!(r#"{{"a": 1, "b": {deep}}}"#),
    ] {
        check(&message(&[], &payload, None), &[(a_is_1.clone(), false)]);
    }
    // The same members, within range, paired, nested less: JSON.
    let shallow = format!("{}1{}", "[".repeat(90), "]".repeat(90));
    for payload in [
        r#"{"a": 1, "b": 1e300}"#.to_owned(),
        r#"{"a": 1, "b": "\ud83d\ude00"}"#.to_owned(),
        format!(r#"{{"a": 1, "b": {shallow}}}"#),
    ] {
        check(&message(&[], &payload, None), &[(a_is_1.clone(), true)]);
    }
}

#[test]
fn payload_is_read_once_and_only_when_needed() {
    use Operator::*;
    let mut builder = ConditionSetBuilder::new();
    let header_only = builder.add_group([rule(
        Subject::HeaderValue("h".into()),
        Equals,
        json!("x"),
        false,
    )]);
    let groups: Vec<_> = ["$.a", "$.b", "$.a.c"]
        .iter()
        .map(|p| {
            builder.add_group([rule(
                Subject::payload_field(p).unwrap(),
                Equals,
                json!(1),
                false,
            )])
        })
        .collect();
    let set = builder.build();
    let mut scratch = set.create_scratch();
    let m = message(&[("h", "x")], r#"{"a": 1, "b": 1}"#, None);
    let mut context = set.context(&m, NOW, &mut scratch);
    assert!(context.holds(header_only));
    assert_eq!(
        groups.iter().map(|&g| context.holds(g)).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert_eq!(scratch.payload_reads(), 1);
    let mut context = set.context(&m, NOW, &mut scratch);
    assert!(context.holds(header_only));
    assert_eq!(
        scratch.payload_reads(),
        1,
        "a header rule must not read the payload"
    );
}

#[test]
fn failures_name_the_rule_and_what_the_message_had() {
    let mut builder = ConditionSetBuilder::new();
    let g = builder.add_group([
        rule(
            Subject::HeaderValue("ct".into()),
            Operator::Equals,
            json!("application/json"),
            false,
        ),
        rule(
            Subject::payload_field("$.unit").unwrap(),
            Operator::Equals,
            json!("celsius"),
            false,
        ),
    ]);
    let set = builder.build();
    let mut scratch = set.create_scratch();
    let m = message(&[("ct", "application/json")], r#"{"unit": "kelvin"}"#, None);
    let failure = set.context(&m, NOW, &mut scratch).first_failure(g).unwrap();
    assert_eq!(failure.index, 1);
    assert_eq!(failure.rule, r#"payload field $.unit Equals "celsius""#);
    assert_eq!(failure.reason, r#"payload field $.unit is "kelvin""#);
    let m = message(&[], "not json", None);
    let failure = set.context(&m, NOW, &mut scratch).first_failure(g).unwrap();
    assert_eq!(
        (failure.index, failure.reason.as_str()),
        (0, r#"header "ct" is absent"#)
    );
}

// ---- generated cases ----

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..4).prop_map(Value::from),
        prop::sample::select(vec![1.0f64, 1.5, -0.5, 2.0]).prop_map(Value::from),
        prop::sample::select(vec!["a", "ab", "b", "1", "true", "é", "a\"b", ""])
            .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::vec((prop::sample::select(vec!["a", "b", "c d"]), inner), 0..3)
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
        ]
    })
}

fn payload() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string()),
        // repeated keys: the last one wins
        1 => (json_value(), json_value()).prop_map(|(x, y)| format!(r#"{{"a": {x}, "b": 1, "a": {y}}}"#)),
        1 => prop::sample::select(vec!["", "not json", "{\"a\": 1", "{\"a\": 1} x", "[1, 2,]"]).prop_map(String::from),
    ]
}

fn subject() -> impl Strategy<Value = Subject> {
    prop_oneof![
        prop::sample::select(vec!["h", "n", "H"]).prop_map(|n| Subject::HeaderValue(n.into())),
        prop::sample::select(vec![
            "$", "$.a", "b", "$.a.b", "$.a[0]", "$['c d']", "$.a[1].a", "$[0]"
        ])
        .prop_map(|p| Subject::payload_field(p).unwrap()),
        Just(Subject::MessageSize),
        Just(Subject::MessageAge),
    ]
}

fn operator() -> impl Strategy<Value = Operator> {
    use Operator::*;
    prop::sample::select(vec![
        Equals,
        NotEquals,
        GreaterThan,
        LessThan,
        GreaterThanOrEqual,
        LessThanOrEqual,
        Contains,
        StartsWith,
        EndsWith,
        Matches,
    ])
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    (
        subject(),
        operator(),
        json_value(),
        any::<bool>(),
        prop::sample::select(vec!["^a", "b$", "1", "é|\""]),
    )
        .prop_map(|(s, op, v, negate, re)| {
            let v = if op == Operator::Matches {
                Value::from(re)
            } else {
                v
            };
            Rule::new(s, op, v, negate).unwrap()
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let header = (
        prop::sample::select(vec!["h", "n"]),
        prop::sample::select(vec![
            "a", "ab", "1", "1.0", "-3", "true", "false", " 1", "1e0", "é",
        ]),
    );
    (
        prop::collection::vec(header, 0..3),
        payload(),
        prop::option::of(NOW - 5..NOW + 5),
    )
        .prop_map(|(headers, payload, ts)| Message {
            topic: "t".into(),
            key: None,
            headers: headers.into_iter().collect::<Headers>(),
            payload: Bytes::from(payload),
            timestamp_ms: ts,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn compiled_set_agrees_with_reference(rules in prop::collection::vec(arb_rule(), 1..6), message in arb_message()) {
        let mut builder = ConditionSetBuilder::new();
        let groups: Vec<_> = rules.iter().map(|r| builder.add_group([r.clone()])).collect();
        let all = builder.add_group(rules.clone());
        let set = builder.build();
        let mut scratch = set.create_scratch();
        let mut context = set.context(&message, NOW, &mut scratch);
        for (rule, group) in rules.iter().zip(groups) {
            prop_assert_eq!(context.holds(group), reference::holds(rule, &message, NOW), "rule `{}`", rule);
        }
        prop_assert_eq!(context.holds(all), rules.iter().all(|r| reference::holds(r, &message, NOW)));
    }
}
