//! design.md's IoT conditions (three `PayloadField` rules, one per module) on
//! 256-byte JSON payloads: the compiled `ConditionSet` reading each payload once
//! (`optimised`) beside the plain reference that parses the payload into a
//! `serde_json::Value` for every rule (`baseline`).
//! Target: optimised ≥ 1,000,000 messages/s on one core (≤ 1 µs per message).

#[path = "support/iot.rs"]
mod iot;
#[path = "../tests/reference/mod.rs"]
mod reference;
use iot::{compiled, messages, rules, NOW};

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let rules = rules();
    let messages = messages();
    let (set, groups) = compiled(&rules);
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
