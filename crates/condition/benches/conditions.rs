//! design.md's IoT conditions (three `PayloadField` rules, one per module) on
//! 256-byte JSON payloads: the compiled `ConditionSet` reading each payload once
//! (`optimised`) beside the plain reference that parses the payload into a
//! `serde_json::Value` for every rule (`baseline`).
//! Target: optimised ≥ 1,000,000 messages/s on one core (≤ 1 µs per message).

#[path = "../tests/reference/mod.rs"]
mod reference;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rustmq_etl_condition::{ConditionSetBuilder, Operator, Rule, Subject};
use rustmq_etl_core::{Bytes, Message};
use serde_json::json;

const NOW: i64 = 1_764_201_600_000;

fn rules() -> Vec<Rule> {
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
fn messages() -> Vec<Message> {
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

fn bench(c: &mut Criterion) {
    let rules = rules();
    let messages = messages();
    let mut builder = ConditionSetBuilder::new();
    let groups: Vec<_> = rules
        .iter()
        .map(|r| builder.add_group([r.clone()]))
        .collect();
    let set = builder.build();
    let mut scratch = set.create_scratch();

    // The two must agree before either is timed.
    for m in &messages {
        let mut context = set.context(m, NOW, &mut scratch);
        for (rule, &g) in rules.iter().zip(&groups) {
            assert_eq!(context.holds(g), reference::holds(rule, m, NOW));
        }
    }
    let reads_before = scratch.payload_reads();

    let mut group = c.benchmark_group("iot_conditions_256B_payload");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    let mut evaluated = 0u64;
    group.bench_function("optimised", |b| {
        b.iter(|| {
            evaluated += 1;
            i = (i + 1) % messages.len();
            let mut context = set.context(black_box(&messages[i]), NOW, &mut scratch);
            black_box(groups.iter().filter(|&&g| context.holds(g)).count())
        })
    });
    // Each message's payload was read exactly once, for three rules.
    assert_eq!(scratch.payload_reads() - reads_before, evaluated);
    group.bench_function("baseline", |b| {
        b.iter(|| {
            i = (i + 1) % messages.len();
            let m = black_box(&messages[i]);
            black_box(rules.iter().filter(|r| reference::holds(r, m, NOW)).count())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
