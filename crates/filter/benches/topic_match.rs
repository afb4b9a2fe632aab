//! Topic matching against 1,000 mixed filters (all six types, a quarter
//! case-insensitive, a tenth negated) in 250 slots: the compiled `FilterSet`
//! (`optimised`) beside the one-filter-at-a-time reference (`baseline`).
//! Target: optimised median ≤ 200 ns per topic and ≥ 100× the baseline.

#[path = "../tests/reference/mod.rs"]
mod reference;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rustmq_etl_filter::{Filter, FilterKind, FilterSetBuilder};

const WORDS: &[&str] = &[
    "events", "logs", "iot", "orders", "billing", "audit", "metrics", "users",
];
const REGIONS: &[&str] = &["eu", "us", "ap", "sa"];

/// 250 slots of 4 filters each, cycling through the six kinds.
fn filters() -> Vec<Vec<Filter>> {
    let kinds = [
        FilterKind::Exact,
        FilterKind::Prefix,
        FilterKind::Suffix,
        FilterKind::Contains,
        FilterKind::Wildcard,
        FilterKind::Regex,
    ];
    (0..250)
        .map(|slot| {
            (0..4)
                .map(|j| {
                    let i = slot * 4 + j;
                    let word = WORDS[i % WORDS.len()];
                    let region = REGIONS[(i / 8) % REGIONS.len()];
                    let kind = kinds[i % kinds.len()];
                    let pattern = match kind {
                        FilterKind::Exact => format!("{word}.{region}.svc{i}"),
                        FilterKind::Prefix => format!("{word}.{region}.svc{i}."),
                        FilterKind::Suffix => format!(".svc{i}.critical"),
                        FilterKind::Contains => format!("svc{i}-"),
                        FilterKind::Wildcard if i % 2 == 0 => format!("{word}.*.svc{i}.*"),
                        FilterKind::Wildcard => format!("{word}.{region}.svc{i}?.*"),
                        FilterKind::Regex => format!(r"^{word}\.(eu|us)\.svc{i}\.\d+$"),
                    };
                    Filter::new(kind, pattern, i % 4 != 3, i % 10 == 7).unwrap()
                })
                .collect()
        })
        .collect()
}

fn topics() -> Vec<String> {
    (0..64)
        .map(|t| {
            let word = WORDS[t % WORDS.len()];
            let region = REGIONS[t % REGIONS.len()];
            match t % 4 {
                0 => format!("{word}.{region}.svc{}.{}", t * 13 % 1000, t),
                1 => format!(
                    "{}.{region}.svc{}.critical",
                    word.to_uppercase(),
                    t * 7 % 1000
                ),
                2 => format!("{word}.{region}.svc{}-worker.events", t * 31 % 1000),
                _ => format!("{word}.{region}.unrelated.topic.{t}"),
            }
        })
        .collect()
}

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
