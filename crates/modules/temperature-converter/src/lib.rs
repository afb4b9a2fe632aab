//! Converts temperature readings from Celsius to Fahrenheit: a JSON payload with
//! `"unit": "celsius"` gets `reading` × 9/5 + 32 and `"unit": "fahrenheit"`; every
//! other byte kept as it was; a celsius `reading` not a number fails. Others pass as they are.
//!
//! Reads and edits the two fields with the SDK's `json::Object`: the payload
//! is checked and scanned once, and the new one is the old one with two values
//! spliced in (no document rebuilt).
use rustmq_etl_sdk::json::Object;
use rustmq_etl_sdk::{export, Message, Outcome};

fn convert(message: &Message) -> Outcome {
    let Ok(reading) = Object::parse(message.payload()) else {
        return Outcome::Unchanged;
    };
    if reading.str("unit").as_deref() != Some("celsius") {
        return Outcome::Unchanged;
    }
    let Some(celsius) = reading.f64("reading") else {
        return Outcome::error("`reading` must be a number");
    };
    let mut fahrenheit = celsius * 9.0 / 5.0 + 32.0;
    if fahrenheit.is_infinite() {
        // The product alone may have overflowed (5e307 °C is 9e307 °F).
        fahrenheit = celsius / 5.0 * 9.0 + 32.0;
    }
    if !fahrenheit.is_finite() {
        // JSON has no infinity: writing one would give `null`.
        return past_the_largest();
    }
    // Round away binary noise (21.5 °C is 70.7 °F, not 70.69999999999999);
    // a number this large has no fraction to round (and × 1e9 would overflow).
    let fahrenheit = if fahrenheit.abs() < 1e15 {
        (fahrenheit * 1e9).round() / 1e9
    } else {
        fahrenheit
    };
    let payload = reading
        .edit()
        .set("reading", fahrenheit)
        .set("unit", "fahrenheit")
        .finish();
    Outcome::edit().set_payload(payload).into()
}

/// (The number is not quoted: formatting floats would add 24 KiB.)
#[cold]
fn past_the_largest() -> Outcome {
    Outcome::error("`reading` in °C is past the largest number in °F")
}

export!(transform = convert);
