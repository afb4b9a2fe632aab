//! temperature-converter as it was first written: the payload parsed into a
//! `serde_json::Value`, two fields changed, the whole document written again.
//! temperature-converter's answers on compact JSON serde_json reads; kept as the
//! baseline the orchestrator's throughput bench measures the SDK's
//! `json::Object` against.
use rustmq_etl_sdk::{export, Message, Outcome};
use serde_json::{Map, Value};

fn convert(message: &Message) -> Outcome {
    let Ok(Value::Object(mut reading)) = serde_json::from_slice::<Value>(message.payload()) else {
        return Outcome::Unchanged;
    };
    if reading.get("unit").and_then(Value::as_str) != Some("celsius") {
        return Outcome::Unchanged;
    }
    let Some(celsius) = reading.get("reading").and_then(Value::as_f64) else {
        return Outcome::error("`reading` must be a number");
    };
    let mut fahrenheit = celsius * 9.0 / 5.0 + 32.0;
    if fahrenheit.is_infinite() {
        // The product alone may have overflowed (5e307 °C is 9e307 °F).
        fahrenheit = celsius / 5.0 * 9.0 + 32.0;
    }
    if !fahrenheit.is_finite() {
        // JSON has no infinity: writing one would give `null`.
        // (The number is not quoted: formatting floats would add 24 KiB.)
        return Outcome::error("`reading` in °C is past the largest number in °F");
    }
    // Round away binary noise (21.5 °C is 70.7 °F, not 70.69999999999999);
    // a number this large has no fraction to round (and × 1e9 would overflow).
    let fahrenheit = if fahrenheit.abs() < 1e15 {
        (fahrenheit * 1e9).round() / 1e9
    } else {
        fahrenheit
    };
    set(&mut reading, "reading", Value::from(fahrenheit));
    set(&mut reading, "unit", Value::from("fahrenheit"));
    match serde_json::to_vec(&reading) {
        Ok(payload) => Outcome::edit().set_payload(payload).into(),
        Err(e) => Outcome::error(format!("cannot write JSON: {e}")),
    }
}

fn set(object: &mut Map<String, Value>, key: &str, value: Value) {
    if let Some(slot) = object.get_mut(key) {
        *slot = value;
    }
}

export!(transform = convert);
