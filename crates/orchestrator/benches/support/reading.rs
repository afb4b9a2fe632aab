//! The throughput bench's sensor reading, included by path by the bench and
//! by the `run_loop` example, so that instruction counts and throughput
//! figures are of one message.

use rustmq_etl_core::Message;

/// A 256-byte JSON reading of `sensor` in `unit`, with a key and a JSON
/// content type.
pub fn reading(sensor: &str, unit: &str) -> Message {
    let mut payload = format!(
        r#"{{"sensor_type":"{sensor}","unit":"{unit}","reading":21.5,"device":"dev-17","note":""#
    );
    while payload.len() < 254 {
        payload.push('x');
    }
    payload.push_str(r#""}"#);
    let mut m = Message::new(format!("iot.sensors.{sensor}"), payload);
    m.key = Some("dev-17".into());
    m.headers.push("content-type", "application/json");
    m
}
