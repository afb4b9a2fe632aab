//! The filters and topics of the topic-matching bench, shared with the
//! `match_loop` example: 1,000 mixed filters (all six types, a quarter
//! case-insensitive, a tenth negated) in 250 slots, and 64 topics in rotation.

use rustmq_etl_filter::{Filter, FilterKind};

const WORDS: &[&str] = &[
    "events", "logs", "iot", "orders", "billing", "audit", "metrics", "users",
];
const REGIONS: &[&str] = &["eu", "us", "ap", "sa"];

/// 250 slots of 4 filters each, cycling through the six kinds.
pub fn filters() -> Vec<Vec<Filter>> {
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

pub fn topics() -> Vec<String> {
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
