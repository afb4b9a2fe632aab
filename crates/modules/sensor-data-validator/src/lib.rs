//! Checks IoT sensor readings: the payload must be a JSON object with a string
//! `sensor_type`, a string `unit` and a finite number `reading`, within the
//! optional bounds of `custom_config` (`{"min_reading": -100, "max_reading":
//! 1000}`). A valid reading gets `x-sensor-valid: true`; an invalid one fails the
//! call with the reason (the pipeline's error strategy decides its fate).
use rustmq_etl_sdk::json::Object;
use rustmq_etl_sdk::{export, Message, Outcome};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    min_reading: Option<f64>,
    max_reading: Option<f64>,
}

/// What a refused `custom_config` is shown.
const EXAMPLE: &str = r#"{"min_reading": -100, "max_reading": 1000}"#;

fn init(custom_config: &str) -> Result<Config, String> {
    rustmq_etl_sdk::json::optional_config(custom_config, EXAMPLE)
}

fn check(config: &Config, payload: &[u8]) -> Result<(), String> {
    let object = Object::parse(payload).map_err(|e| {
        if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
            "payload is not a JSON object".to_owned()
        } else {
            format!("payload is not JSON: {e}")
        }
    })?;
    for field in ["sensor_type", "unit"] {
        match (object.contains(field), object.str(field)) {
            (_, Some(s)) if !s.is_empty() => {}
            (true, _) => return Err(format!("`{field}` must be a non-empty string")),
            (false, _) => return Err(format!("`{field}` is missing")),
        }
    }
    let reading = match object.contains("reading") {
        true => object.f64("reading").ok_or("`reading` must be a number")?,
        false => return Err("`reading` is missing".into()),
    };
    if let Some(min) = config.min_reading.filter(|&min| reading < min) {
        return Err(format!("`reading` {reading} is below {min}"));
    }
    if let Some(max) = config.max_reading.filter(|&max| reading > max) {
        return Err(format!("`reading` {reading} is above {max}"));
    }
    Ok(())
}

fn validate(config: &Config, message: &Message) -> Outcome {
    match check(config, message.payload()) {
        Ok(()) => Outcome::edit().set_header("x-sensor-valid", "true").into(),
        Err(reason) => Outcome::error(reason),
    }
}

export!(init = init, transform = validate);
