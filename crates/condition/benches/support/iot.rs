//! The conditions bench's workload, included by path by the bench and by the
//! `eval_loop` example, so that timings and instruction counts are of one
//! workload.

use rustmq_etl_condition::{ConditionSet, ConditionSetBuilder, GroupId, Operator, Rule, Subject};
use rustmq_etl_core::{Bytes, Message};
use serde_json::json;

pub const NOW: i64 = 1_764_201_600_000;

/// design.md's IoT conditions, one per module.
pub fn rules() -> Vec<Rule> {
    let field = |p: &str| Subject::payload_field(p).unwrap();
    vec![
        Rule::new(
            field("$.sensor_type"),
            Operator::Contains,
            json!("temperature"),
            false,
        )
        .unwrap(),
        Rule::new(field("$.unit"), Operator::Equals, json!("celsius"), false).unwrap(),
        Rule::new(field("$.reading"), Operator::GreaterThan, json!(0), false).unwrap(),
    ]
}

/// Sixteen messages whose payloads are 256 bytes of realistic sensor JSON.
pub fn messages() -> Vec<Message> {
    (0..16)
        .map(|i| {
            let (kind, unit) = if i % 2 == 0 { ("temperature", "celsius") } else { ("pressure", "hPa") };
            let mut payload = format!(
                r#"{{"device_id":"dev-{i:04}","site":"plant-north","sensor_type":"{kind}","unit":"{unit}","reading":{}.{},"battery":0.{i},"firmware":"2.4.{i}","tags":["line-{}","zone-b"],"seq":{}"#,
                i * 3 - 10,
                i % 10,
                i % 4,
                1000 + i
            );
            let pad = 256 - payload.len() - r#","note":""}"#.len();
            payload.push_str(&format!(r#","note":"{}"}}"#, "x".repeat(pad)));
            assert_eq!(payload.len(), 256);
            Message {
                topic: format!("iot.sensors.{kind}"),
                key: Some(Bytes::from(format!("dev-{i:04}"))),
                headers: [("content-type", "application/json")].into_iter().collect(),
                payload: Bytes::from(payload),
                timestamp_ms: Some(NOW - 1000),
            }
        })
        .collect()
}

/// `rules` compiled into one set, one group per rule (one module each).
pub fn compiled(rules: &[Rule]) -> (ConditionSet, Vec<GroupId>) {
    let mut builder = ConditionSetBuilder::new();
    let groups = rules
        .iter()
        .map(|r| builder.add_group([r.clone()]))
        .collect();
    (builder.build(), groups)
}
