//! Condition compilation and evaluation against the plain reference of
//! `crates/condition/tests/reference`: any disagreement is a crash. Numbers
//! stay where `f64` is exact, as the reference documents.
#![no_main]

#[path = "../../condition/tests/reference/mod.rs"]
mod reference;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use rustmq_etl_condition::{ConditionSetBuilder, Operator, Rule, Subject};
use rustmq_etl_core::{Bytes, Message};
use serde_json::{json, Value};

const NOW: i64 = 1_764_201_600_000;
const NAMES: [&str; 4] = ["a", "b", "n", "content-type"];
const PATHS: [&str; 8] = [
    "$.a",
    "$.b",
    "$.a.b",
    "$.list[0]",
    "$.list[1].a",
    "$['odd key']",
    "$",
    "$.n",
];
const OPERATORS: [Operator; 10] = [
    Operator::Equals,
    Operator::NotEquals,
    Operator::GreaterThan,
    Operator::LessThan,
    Operator::GreaterThanOrEqual,
    Operator::LessThanOrEqual,
    Operator::Contains,
    Operator::StartsWith,
    Operator::EndsWith,
    Operator::Matches,
];

fn text(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    const ALPHABET: &[u8] = b"ab1.5 -x{}";
    let len = u.int_in_range(0..=6)?;
    (0..len)
        .map(|_| u.choose(ALPHABET).map(|c| *c as char))
        .collect()
}

fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0..=if depth > 1 { 4 } else { 6 })? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(u.int_in_range(-50i32..=50)?),
        3 => json!(f64::from(u.int_in_range(-20i32..=20)?) + 0.5),
        4 => Value::String(text(u)?),
        5 => Value::Array(
            (0..u.int_in_range(0..=2)?)
                .map(|_| value(u, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            let mut map = serde_json::Map::new();
            for _ in 0..u.int_in_range(0..=3)? {
                let key = *u.choose(&["a", "b", "n", "list", "odd key"])?;
                map.insert(key.to_owned(), value(u, depth + 1)?);
            }
            Value::Object(map)
        }
    })
}

fn rule(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<Rule>> {
    let subject = match u.int_in_range(0..=3)? {
        0 => Subject::HeaderValue((*u.choose(&NAMES)?).to_owned()),
        1 => match Subject::payload_field(u.choose(&PATHS)?) {
            Ok(s) => s,
            Err(_) => return Ok(None),
        },
        2 => Subject::MessageSize,
        _ => Subject::MessageAge,
    };
    let operator = *u.choose(&OPERATORS)?;
    let value = value(u, 1)?;
    Ok(Rule::new(subject, operator, value, u.arbitrary()?).ok())
}

fn message(u: &mut Unstructured<'_>) -> arbitrary::Result<Message> {
    let mut m = Message::new("t", "");
    for _ in 0..u.int_in_range(0..=3)? {
        m.headers.push(*u.choose(&NAMES)?, text(u)?);
    }
    m.payload = match u.int_in_range(0..=3)? {
        0 | 1 => Bytes::from(value(u, 0)?.to_string()),
        // JSON with bytes that may not be UTF-8 put in: the engine checks
        // a payload's UTF-8 as it reads its strings.
        2 => {
            let mut bytes = value(u, 0)?.to_string().into_bytes();
            for _ in 0..u.int_in_range(1..=2)? {
                let at = u.int_in_range(0..=bytes.len())?;
                let byte: u8 = u.arbitrary()?;
                bytes.insert(at, byte);
            }
            Bytes::from(bytes)
        }
        _ => Bytes::from(text(u)?),
    };
    m.key = u.arbitrary::<bool>()?.then(|| Bytes::from_static(b"k"));
    m.timestamp_ms = if u.arbitrary()? {
        Some(NOW - i64::from(u.int_in_range(-1000i32..=1000)?))
    } else {
        None
    };
    Ok(m)
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(rules) = (0..u.int_in_range(1..=4).unwrap_or(1))
        .map(|_| rule(&mut u))
        .collect::<arbitrary::Result<Vec<_>>>()
    else {
        return;
    };
    let rules: Vec<Rule> = rules.into_iter().flatten().collect();
    let Ok(message) = message(&mut u) else {
        return;
    };
    let mut builder = ConditionSetBuilder::new();
    let groups: Vec<_> = rules
        .iter()
        .map(|r| builder.add_group([r.clone()]))
        .collect();
    let all = builder.add_group(rules.iter().cloned());
    let set = builder.build();
    let mut scratch = set.create_scratch();
    let mut context = set.context(&message, NOW, &mut scratch);
    for (rule, group) in rules.iter().zip(groups) {
        assert_eq!(
            context.holds(group),
            reference::holds(rule, &message, NOW),
            "`{rule}` on {message:?}"
        );
    }
    assert_eq!(
        context.holds(all),
        rules.iter().all(|r| reference::holds(r, &message, NOW))
    );
});
