//! A filter: drops messages by a field of their JSON payload.
//!
//! `custom_config` names the field and either the values that drop a
//! message or those that keep it:
//!
//! - `{"field": "type", "drop": ["heartbeat", "ping"]}` drops a message whose
//!   payload is a JSON object whose `type` is one of the `drop` values; any
//!   other message passes on unchanged (one without the field, or whose
//!   payload is not a JSON object, included: the filter fails open);
//! - `{"field": "level", "keep": ["error", "warn"]}` drops every message whose
//!   `level` is not one of the `keep` values (one without the field, or whose
//!   payload is not a JSON object, included: the filter fails closed).
//!
//! Values are compared as JSON, at any depth: `"1"` is a string; `1`, `1.0`
//! and `1e0` are the same number, and integers are compared exactly (two
//! 19-digit ids that differ in their last digit differ); objects match
//! whatever the order of their keys. A `field` is a top-level key; a payload
//! that repeats it is read by its last. A field that is an array or an
//! object is read only if a listed value is one (a large one then takes the
//! module's memory in proportion). `field` must not be empty, and
//! exactly one of `drop` and `keep` must be a list of at least one value;
//! anything else in `custom_config` is refused as the module starts.
use rustmq_etl_sdk::json::Object;
use rustmq_etl_sdk::{export, Message, Outcome};
use serde::Deserialize;
use serde_json::{Number, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    field: String,
    drop: Option<Vec<Value>>,
    keep: Option<Vec<Value>>,
}

enum Rule {
    Drop(Vec<Value>),
    Keep(Vec<Value>),
}

struct Filter {
    field: String,
    rule: Rule,
    /// Whether a value listed is an array or an object: if none is, a field
    /// that is one equals none of them.
    composite: bool,
}

const SHAPE: &str =
    r#"{"field": "type", "drop": ["heartbeat"]} or {"field": "level", "keep": ["error"]}"#;

fn init(custom_config: &str) -> Result<Filter, String> {
    let refused = |why: &str| format!("{why} (give {SHAPE})");
    // An object, kept as a value: whether `drop` or `keep` is there at all
    // (null included) is a rule of its own.
    let value: Value = rustmq_etl_sdk::json::required_config(custom_config, SHAPE)?;
    let has = |key: &str| value.get(key).is_some();
    let config = Config::deserialize(&value).map_err(|e| refused(&e.to_string()))?;
    let rule = match (config.drop, config.keep) {
        (Some(values), None) if !has("keep") => Rule::Drop(values),
        (None, Some(values)) if !has("drop") => Rule::Keep(values),
        _ => return Err(refused("needs exactly one of `drop` and `keep`")),
    };
    let (Rule::Drop(values) | Rule::Keep(values)) = &rule;
    if values.is_empty() {
        return Err(refused(
            "lists no value: an empty `drop` drops nothing and an empty `keep` drops everything",
        ));
    }
    if config.field.is_empty() {
        return Err(refused("names no field"));
    }
    let composite = values.iter().any(|v| v.is_array() || v.is_object());
    Ok(Filter {
        field: config.field,
        rule,
        composite,
    })
}

/// JSON equality at any depth: numbers by value (integers exactly), objects
/// whatever the order of their keys.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => same_number(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn same_number(x: &Number, y: &Number) -> bool {
    let integer = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (integer(x), integer(y)) {
        (Some(i), Some(j)) => i == j,
        (Some(i), None) => whole(y.as_f64(), i),
        (None, Some(j)) => whole(x.as_f64(), j),
        (None, None) => x.as_f64() == y.as_f64(),
    }
}

/// Whether the float `f` is the integer `i` exactly.
fn whole(f: Option<f64>, i: i128) -> bool {
    f.is_some_and(|f| f.fract() == 0.0 && f.abs() < 1e38 && f as i128 == i)
}

fn filter(filter: &Filter, message: &Message) -> Outcome {
    let object = Object::parse(message.payload()).ok();
    // A field that is an array or an object, when no value listed is one, is
    // not read into memory to find that it equals none (a large one would
    // fail `memory_limit`).
    let value: Option<Value> = object
        .as_ref()
        .and_then(|object| object.raw(&filter.field))
        .filter(|raw| filter.composite || !raw.starts_with(['[', '{']))
        .and_then(|raw| serde_json::from_str(raw).ok());
    let listed = |values: &[Value]| {
        value
            .as_ref()
            .is_some_and(|value| values.iter().any(|v| same(value, v)))
    };
    let dropped = match &filter.rule {
        Rule::Drop(values) => listed(values),
        Rule::Keep(values) => !listed(values),
    };
    if dropped {
        Outcome::Drop
    } else {
        Outcome::Unchanged
    }
}

export!(init = init, transform = filter);
