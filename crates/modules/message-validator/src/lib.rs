//! Validates JSON messages.
//!
//! `custom_config`: `{"schema_validation": true, "strict_mode": false,
//! "required_fields": ["user", "action"]}` (all optional). The payload must be a
//! JSON object (when `schema_validation`, the default) holding every required
//! field. A valid message gets `x-validation: passed`. An invalid one fails the
//! call in strict mode, and otherwise passes on with `x-validation: failed` and
//! the reason in `x-validation-error`.
use rustmq_etl_sdk::json::Object;
use rustmq_etl_sdk::{export, Message, Outcome};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    schema_validation: bool,
    strict_mode: bool,
    required_fields: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            schema_validation: true,
            strict_mode: false,
            required_fields: Vec::new(),
        }
    }
}

/// What a refused `custom_config` is shown.
const EXAMPLE: &str =
    r#"{"schema_validation": true, "strict_mode": false, "required_fields": ["user", "action"]}"#;

fn init(custom_config: &str) -> Result<Config, String> {
    rustmq_etl_sdk::json::optional_config(custom_config, EXAMPLE)
}

fn problem(config: &Config, payload: &[u8]) -> Option<String> {
    if !config.schema_validation && config.required_fields.is_empty() {
        return None;
    }
    let object = match Object::parse(payload) {
        Ok(object) => object,
        Err(_) if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() => {
            return Some("payload is not a JSON object".to_owned())
        }
        Err(e) => return Some(format!("payload is not JSON: {e}")),
    };
    let missing: Vec<&str> = config
        .required_fields
        .iter()
        .filter(|f| !object.contains(f))
        .map(String::as_str)
        .collect();
    (!missing.is_empty()).then(|| format!("missing required fields: {}", missing.join(", ")))
}

fn validate(config: &Config, message: &Message) -> Outcome {
    match problem(config, message.payload()) {
        None => Outcome::edit().set_header("x-validation", "passed").into(),
        Some(reason) if config.strict_mode => Outcome::error(reason),
        Some(reason) => Outcome::edit()
            .set_header("x-validation", "failed")
            .set_header("x-validation-error", reason)
            .into(),
    }
}

export!(init = init, transform = validate);
