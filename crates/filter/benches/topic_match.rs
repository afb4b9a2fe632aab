//! Topic matching against 1,000 mixed filters (all six types, a quarter
//! case-insensitive, a tenth negated) in 250 slots: the compiled `FilterSet`
//! (`optimised`) beside the one-filter-at-a-time reference (`baseline`).
//! Target: optimised median ≤ 200 ns per topic and ≥ 100× the baseline.

#[path = "../tests/reference/mod.rs"]
mod reference;
#[path = "workload/mod.rs"]
mod workload;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rustmq_etl_filter::FilterSetBuilder;
use workload::{filters, topics};

fn bench(c: &mut Criterion) {
    let slots = filters();
    let topics = topics();
    let mut builder = FilterSetBuilder::new();
    for slot in &slots {
        builder.add_slot(slot.clone());
    }
    let set = builder.build().unwrap();
    let reference = reference::Reference::new(&slots);

    // The two must agree on every bench topic before either is timed.
    let mut cache = set.create_cache();
    let mut accepted = 0;
    for topic in &topics {
        let matches = set.matches(topic, &mut cache);
        for s in 0..slots.len() {
            let id = matches.iter().any(|id| id.index() == s);
            assert_eq!(id, reference.accepts(s, topic), "{topic}, slot {s}");
            accepted += usize::from(id);
        }
    }
    assert!(
        accepted > topics.len(),
        "the bench should accept some slots"
    );

    let mut group = c.benchmark_group("topic_match_1000_filters");
    let mut i = 0;
    group.bench_function("optimised", |b| {
        b.iter(|| {
            i = (i + 1) % topics.len();
            let matches = set.matches(black_box(&topics[i]), &mut cache);
            black_box(matches.len())
        })
    });
    group.bench_function("baseline", |b| {
        b.iter(|| {
            i = (i + 1) % topics.len();
            let topic = black_box(&topics[i]);
            black_box(
                (0..slots.len())
                    .filter(|&s| reference.accepts(s, topic))
                    .count(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
