//! Converts pressure readings to one unit: a JSON payload with a known `unit`
//! (`Pa`, `hPa`, `kPa`, `bar`, `mbar`, `psi`, `atm`, `mmHg`; case-insensitive) gets
//! its `reading` in the target unit (`custom_config`: `{"unit": "hPa"}`, the
//! default). An unknown unit fails the call; a payload without a unit passes on.
//! The two fields are spliced into the payload (the SDK's `json::Object`):
//! the rest of it is kept byte for byte.
use rustmq_etl_sdk::json::Object;
use rustmq_etl_sdk::{export, Message, Outcome};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    unit: String,
}

impl Default for Config {
    fn default() -> Self {
        Config { unit: "hPa".into() }
    }
}

/// Pascals per unit, and the unit's canonical spelling.
fn pascals(unit: &str) -> Option<(f64, &'static str)> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "pa" => (1.0, "Pa"),
        "hpa" => (100.0, "hPa"),
        "kpa" => (1_000.0, "kPa"),
        "bar" => (100_000.0, "bar"),
        "mbar" => (100.0, "mbar"),
        "psi" => (6_894.757_293_168, "psi"),
        "atm" => (101_325.0, "atm"),
        "mmhg" => (133.322_387_415, "mmHg"),
        _ => return None,
    })
}

struct Target {
    per_unit: f64,
    name: &'static str,
}

/// What a refused `custom_config` is shown.
const EXAMPLE: &str = r#"{"unit": "hPa"}"#;

fn init(custom_config: &str) -> Result<Target, String> {
    let config: Config = rustmq_etl_sdk::json::optional_config(custom_config, EXAMPLE)?;
    let (per_unit, name) =
        pascals(&config.unit).ok_or_else(|| format!("unknown target unit {:?}", config.unit))?;
    Ok(Target { per_unit, name })
}

fn normalize(target: &Target, message: &Message) -> Outcome {
    let Ok(reading) = Object::parse(message.payload()) else {
        return Outcome::Unchanged;
    };
    let Some(unit) = reading.str("unit") else {
        return Outcome::Unchanged;
    };
    let Some((per_unit, _)) = pascals(&unit) else {
        return Outcome::error(format!("unknown pressure unit {unit:?}"));
    };
    let Some(value) = reading.f64("reading") else {
        return Outcome::error("`reading` must be a number");
    };
    let converted = ((value * per_unit / target.per_unit) * 1e9).round() / 1e9;
    let payload = reading
        .edit()
        .set("reading", converted)
        .set("unit", target.name)
        .finish();
    Outcome::edit().set_payload(payload).into()
}

export!(init = init, transform = normalize);
