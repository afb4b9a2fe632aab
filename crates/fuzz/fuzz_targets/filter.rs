//! Topic-filter compilation and matching against the one-filter-at-a-time
//! reference of `crates/filter/tests/reference`: any disagreement is a crash.
#![no_main]

#[path = "../../filter/tests/reference/mod.rs"]
mod reference;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rustmq_etl_filter::{Filter, FilterKind, FilterSetBuilder};

#[derive(Arbitrary, Debug)]
struct Input {
    slots: Vec<Vec<(u8, String, bool, bool)>>,
    topics: Vec<String>,
}

const KINDS: [FilterKind; 6] = [
    FilterKind::Exact,
    FilterKind::Prefix,
    FilterKind::Suffix,
    FilterKind::Contains,
    FilterKind::Wildcard,
    FilterKind::Regex,
];

fuzz_target!(|input: Input| {
    let slots: Vec<Vec<Filter>> = input
        .slots
        .iter()
        .take(8)
        .map(|slot| {
            slot.iter()
                .take(4)
                .filter(|(_, pattern, _, _)| pattern.len() <= 24)
                .filter_map(|(kind, pattern, case_sensitive, negate)| {
                    let kind = KINDS[*kind as usize % KINDS.len()];
                    Filter::new(kind, pattern, *case_sensitive, *negate).ok()
                })
                .collect()
        })
        .collect();
    let mut builder = FilterSetBuilder::new();
    let ids: Vec<_> = slots.iter().map(|s| builder.add_slot(s.clone())).collect();
    let Ok(set) = builder.build() else {
        return;
    };
    let reference = reference::Reference::new(&slots);
    let mut cache = set.create_cache();
    for topic in input.topics.iter().take(8) {
        let matches = set.matches(topic, &mut cache);
        for (s, slot) in slots.iter().enumerate() {
            assert_eq!(
                matches.contains(ids[s]),
                reference.accepts(s, topic),
                "topic {topic:?}, slot {s}: {slot:?}"
            );
        }
    }
});
