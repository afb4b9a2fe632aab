//! A filter: drops messages by a field of their JSON payload.
//!
//! `custom_config` names the field and either the values that drop a
//! message or those that keep it:
//!
//! - `{"field": "type", "drop": ["heartbeat", "ping"]}` drops a message whose
//!   payload is a JSON object whose `type` is one of the `drop` values; any
//!   other message passes on unchanged (one without the field, or whose
//!   payload is not a JSON object, included);
//! - `{"field": "level", "keep": ["error", "warn"]}` drops every message whose
//!   `level` is not one of the `keep` values (one without the field, or whose
//!   payload is not a JSON object, included).
//!
//! Values are compared as JSON: `"1"` is a string, and `1` and `1.0` are the
//! same number. A `field` is a top-level key. Exactly one of `drop` and
//! `keep`; anything else in `custom_config` is refused as the module starts.
use rustmq_etl_sdk::json::Object;
use rustmq_etl_sdk::{export, Message, Outcome};
use serde::Deserialize;
use serde_json::Value;

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
}

const SHAPE: &str =
    r#"{"field": "type", "drop": ["heartbeat"]} or {"field": "level", "keep": ["error"]}"#;

fn init(custom_config: &str) -> Result<Filter, String> {
    let config: Config = serde_json::from_str(custom_config)
        .map_err(|e| format!("invalid custom_config: {e} (give {SHAPE})"))?;
    let rule = match (config.drop, config.keep) {
        (Some(values), None) => Rule::Drop(values),
        (None, Some(values)) => Rule::Keep(values),
        _ => {
            return Err(format!(
                "custom_config needs exactly one of `drop` and `keep` (give {SHAPE})"
            ))
        }
    };
    Ok(Filter {
        field: config.field,
        rule,
    })
}

/// JSON equality, numbers by value.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn filter(filter: &Filter, message: &Message) -> Outcome {
    let value: Option<Value> = Object::parse(message.payload())
        .ok()
        .and_then(|object| object.get(&filter.field));
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
