//! The obvious condition semantics, straight from selection.md: parse the whole
//! payload into a `serde_json::Value` for every rule, walk the path, compare.
//! Numbers are compared as `f64`, which is exact for the values the tests use.

use rustmq_etl_condition::{Operator, PathSegment, Rule, Subject};
use rustmq_etl_core::Message;
use serde_json::Value;

enum S {
    Header(String),
    Number(f64),
    Json(Value),
}

fn subject(rule: &Rule, message: &Message, now_ms: i64) -> Option<S> {
    match rule.subject() {
        Subject::HeaderValue(name) => message
            .headers
            .iter()
            .rfind(|(n, _)| n == name)
            .map(|(_, v)| S::Header(v.to_owned())),
        Subject::MessageSize => {
            let headers: usize = message.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
            let key = message.key.as_ref().map_or(0, |k| k.len());
            Some(S::Number((message.payload.len() + key + headers) as f64))
        }
        Subject::MessageAge => message.timestamp_ms.map(|t| S::Number((now_ms - t) as f64)),
        Subject::PayloadField(path) => {
            let mut value: Value = serde_json::from_slice(&message.payload).ok()?;
            for segment in path.segments() {
                value = match segment {
                    PathSegment::Field(name) => value.as_object()?.get(name)?.clone(),
                    PathSegment::Index(i) => value.as_array()?.get(*i)?.clone(),
                };
            }
            Some(S::Json(value))
        }
    }
}

fn header_number(text: &str) -> Option<f64> {
    if text.trim() != text {
        return None;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Number(n)) => n.as_f64(),
        _ => None,
    }
}

fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn equal(s: &S, v: &Value) -> bool {
    match (s, v) {
        (S::Header(h), Value::String(w)) => h == w,
        (S::Header(h), Value::Number(n)) => header_number(h) == n.as_f64(),
        (S::Header(h), Value::Bool(b)) => h == if *b { "true" } else { "false" },
        (S::Header(_), _) => false,
        (S::Number(x), Value::Number(n)) => Some(*x) == n.as_f64(),
        (S::Number(_), _) => false,
        (S::Json(j), v) => json_equal(j, v),
    }
}

fn as_str(s: &S) -> Option<&str> {
    match s {
        S::Header(h) => Some(h),
        S::Json(Value::String(x)) => Some(x),
        _ => None,
    }
}

fn as_number(s: &S) -> Option<f64> {
    match s {
        S::Header(h) => header_number(h),
        S::Number(x) => Some(*x),
        S::Json(Value::Number(n)) => n.as_f64(),
        _ => None,
    }
}

fn order(s: &S, v: &Value) -> Option<std::cmp::Ordering> {
    if let (Some(a), Value::String(b)) = (as_str(s), v) {
        return Some(a.as_bytes().cmp(b.as_bytes()));
    }
    if let Value::Number(n) = v {
        return as_number(s)?.partial_cmp(&n.as_f64()?);
    }
    None
}

/// Whether `rule` holds for `message`.
pub fn holds(rule: &Rule, message: &Message, now_ms: i64) -> bool {
    let v = rule.value();
    let comparison = match subject(rule, message, now_ms) {
        None => false,
        Some(s) => match rule.operator() {
            Operator::Equals => equal(&s, v),
            Operator::NotEquals => !equal(&s, v),
            Operator::GreaterThan => order(&s, v).is_some_and(|o| o.is_gt()),
            Operator::LessThan => order(&s, v).is_some_and(|o| o.is_lt()),
            Operator::GreaterThanOrEqual => order(&s, v).is_some_and(|o| o.is_ge()),
            Operator::LessThanOrEqual => order(&s, v).is_some_and(|o| o.is_le()),
            Operator::Contains => match (&s, v) {
                (S::Json(Value::Array(items)), v) => {
                    items.iter().any(|i| equal(&S::Json(i.clone()), v))
                }
                (s, Value::String(w)) => as_str(s).is_some_and(|x| x.contains(w.as_str())),
                _ => false,
            },
            Operator::StartsWith => {
                matches!((as_str(&s), v), (Some(x), Value::String(w)) if x.starts_with(w.as_str()))
            }
            Operator::EndsWith => {
                matches!((as_str(&s), v), (Some(x), Value::String(w)) if x.ends_with(w.as_str()))
            }
            Operator::Matches => match (as_str(&s), v) {
                (Some(x), Value::String(re)) => regex::Regex::new(re).unwrap().is_match(x),
                _ => false,
            },
        },
    };
    comparison != rule.negate()
}
