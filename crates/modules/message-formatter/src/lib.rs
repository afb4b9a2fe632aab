//! Normalises JSON payloads: rewrites them compactly (or pretty-printed with
//! `{"pretty": true}` in `custom_config`) and sets `content-type:
//! application/json`. A payload that is not JSON passes on unchanged.
use rustmq_etl_sdk::{export, Message, Outcome};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    pretty: bool,
}

/// What a refused `custom_config` is shown.
const EXAMPLE: &str = r#"{"pretty": true}"#;

fn init(custom_config: &str) -> Result<Config, String> {
    rustmq_etl_sdk::json::optional_config(custom_config, EXAMPLE)
}

fn format(config: &Config, message: &Message) -> Outcome {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(message.payload()) else {
        return Outcome::Unchanged;
    };
    let text = if config.pretty {
        serde_json::to_vec_pretty(&value)
    } else {
        serde_json::to_vec(&value)
    };
    match text {
        Ok(text) => Outcome::edit()
            .set_payload(text)
            .set_header("content-type", "application/json")
            .into(),
        Err(e) => Outcome::error(format!("cannot write JSON: {e}")),
    }
}

export!(init = init, transform = format);
