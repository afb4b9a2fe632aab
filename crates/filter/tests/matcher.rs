//! The compiled `FilterSet` against the one-filter-at-a-time reference, on
//! hand-picked cases and on generated topics and patterns.

mod reference;

use proptest::prelude::*;
use rustmq_etl_filter::{Filter, FilterKind, FilterSetBuilder};

fn filter(kind: FilterKind, pattern: &str, case_sensitive: bool, negate: bool) -> Filter {
    Filter::new(kind, pattern, case_sensitive, negate).unwrap()
}

/// Checks every slot's answer for every topic against the reference, and the
/// expected answers where given.
fn check(slots: &[Vec<Filter>], topics: &[&str], expected: Option<&[&[bool]]>) {
    let mut builder = FilterSetBuilder::new();
    let ids: Vec<_> = slots.iter().map(|s| builder.add_slot(s.clone())).collect();
    let set = builder.build().unwrap();
    let reference = reference::Reference::new(slots);
    let mut cache = set.create_cache();
    for (t, topic) in topics.iter().enumerate() {
        let matches = set.matches(topic, &mut cache);
        for (s, slot) in slots.iter().enumerate() {
            let want = reference.accepts(s, topic);
            assert_eq!(
                matches.contains(ids[s]),
                want,
                "topic {topic:?}, slot {s} with filters {slot:?}"
            );
            for (i, (id, _)) in set.slot_filters(ids[s]).enumerate() {
                assert_eq!(
                    matches.pattern_matched(id),
                    reference.pattern_matches(s, i, topic)
                );
            }
            if let Some(expected) = expected {
                assert_eq!(want, expected[t][s], "expectation for {topic:?}, slot {s}");
            }
        }
        let listed: Vec<_> = matches.iter().collect();
        assert_eq!(
            listed,
            ids.iter()
                .copied()
                .filter(|&id| matches.contains(id))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn every_kind_with_case_and_negation() {
    use FilterKind::*;
    let slots = vec![
        vec![filter(Exact, "events", true, false)],
        vec![filter(Prefix, "logs.", false, false)],
        vec![filter(Suffix, ".critical", true, false)],
        vec![filter(Contains, "error", false, false)],
        vec![filter(Wildcard, "events.*", false, false)],
        vec![filter(Wildcard, "a?c", true, false)],
        vec![filter(Regex, r"^sensor-\d+", true, false)],
        vec![filter(Regex, "ERR", false, false)],
        vec![filter(Exact, "*", false, false)],
        vec![filter(Suffix, ".debug", true, true)],
        vec![],
        vec![
            filter(Prefix, "x", true, true),
            filter(Prefix, "y", true, true),
        ],
    ];
    let topics = [
        "events",
        "LOGS.app",
        "sys.critical",
        "An-Error",
        "Events.Mobile",
        "abc",
        "sensor-42",
        "*",
        "app.debug",
        "",
        "xy",
    ];
    #[rustfmt::skip]
    let expected: &[&[bool]] = &[
        // exact prefix suffix contains wild  ?     regex  (?i)   exact* !suffix empty !x|!y
        &[true,  false, false, false,   false, false, false, false, false, true,  true, true], // events
        &[false, true,  false, false,   false, false, false, false, false, true,  true, true], // LOGS.app
        &[false, false, true,  false,   false, false, false, false, false, true,  true, true], // sys.critical
        &[false, false, false, true,    false, false, false, true,  false, true,  true, true], // An-Error
        &[false, false, false, false,   true,  false, false, false, false, true,  true, true], // Events.Mobile
        &[false, false, false, false,   false, true,  false, false, false, true,  true, true], // abc
        &[false, false, false, false,   false, false, true,  false, false, true,  true, true], // sensor-42
        &[false, false, false, false,   false, false, false, false, true,  true,  true, true], // *
        &[false, false, false, false,   false, false, false, false, false, false, true, true], // app.debug
        &[false, false, false, false,   false, false, false, false, false, true,  true, true], // ""
        &[false, false, false, false,   false, false, false, false, false, true,  true, true], // xy: !y accepts
    ];
    check(&slots, &topics, Some(expected));
}

#[test]
fn unicode_simple_case_folding() {
    use FilterKind::*;
    let slots = vec![
        vec![filter(Exact, "kelvin", false, false)],
        vec![filter(Prefix, "STRASSE", false, false)],
        vec![filter(Contains, "σ", false, false)],
        vec![filter(Wildcard, "*ß?", false, false)],
        vec![filter(Regex, "^é", false, false)],
    ];
    let topics = [
        "\u{212A}ELVIN",
        "strasse.x",
        "ΟΔΟΣ",
        "odoς",
        "x\u{1E9E}y",
        "É",
        "straße",
    ];
    check(&slots, &topics, None);
}

/// A Unicode word boundary beside a non-ASCII letter is where the lazy DFA gives
/// up and the set answers with its fallback engine.
#[test]
fn word_boundaries_beside_non_ascii_letters() {
    use FilterKind::*;
    let slots = vec![
        vec![filter(Regex, r"\bfoo\b", true, false)],
        vec![filter(Regex, r"é\b", false, false)],
        vec![filter(Wildcard, "*.x", true, false)],
        vec![filter(Regex, r"\bbar", true, true)],
    ];
    let topics = ["a.foo.x", "éfoo.x", "é.foo", "CAFÉ.x", "café.bar", "ébar"];
    let expected: &[&[bool]] = &[
        &[true, false, true, true],
        &[false, false, true, true],
        &[true, true, false, true],
        &[false, true, true, true],
        &[false, true, false, false],
        &[false, false, false, true],
    ];
    check(&slots, &topics, Some(expected));
}

fn kind() -> impl Strategy<Value = FilterKind> {
    prop_oneof![
        Just(FilterKind::Exact),
        Just(FilterKind::Prefix),
        Just(FilterKind::Suffix),
        Just(FilterKind::Contains),
        Just(FilterKind::Wildcard),
        Just(FilterKind::Regex),
    ]
}

/// Characters chosen to collide: separators, glob and regex metacharacters, and
/// letters whose simple case folding is not ASCII lowercasing.
const ALPHABET: &[char] = &[
    'a', 'b', 'A', 'B', 'k', 'K', 's', 'S', '.', '-', '*', '?', '\\', '\u{212A}', '\u{017F}', 'ß',
    '\u{1E9E}', 'σ', 'Σ', 'ς', 'é', 'É',
];

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(ALPHABET), 0..max)
        .prop_map(|chars| chars.into_iter().collect())
}

fn pattern_for(kind: FilterKind) -> BoxedStrategy<String> {
    match kind {
        FilterKind::Wildcard => proptest::collection::vec(
            prop_oneof![
                3 => proptest::sample::select(ALPHABET).prop_filter("escape", |c| *c != '\\').prop_map(String::from),
                1 => Just(r"\*".to_owned()),
                1 => Just(r"\\".to_owned()),
            ],
            0..6,
        )
        .prop_map(|parts| parts.concat())
        .boxed(),
        FilterKind::Regex => prop_oneof![
            Just("^a".to_owned()),
            Just("b$".to_owned()),
            Just("k+".to_owned()),
            Just("^[a-b]*$".to_owned()),
            Just(r"s\.".to_owned()),
            Just("σ|é".to_owned()),
            Just("".to_owned()),
            Just(r"^\w+-".to_owned()),
            // Unicode word boundaries stop the lazy DFA at non-ASCII bytes.
            Just(r"\bk".to_owned()),
            Just(r"s\b".to_owned()),
        ]
        .boxed(),
        _ => text(4).boxed(),
    }
}

fn arb_filter() -> impl Strategy<Value = Filter> {
    kind().prop_flat_map(|kind| {
        (
            pattern_for(kind),
            any::<bool>(),
            proptest::bool::weighted(0.2),
        )
            .prop_map(move |(p, cs, negate)| Filter::new(kind, p, cs, negate).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn compiled_set_agrees_with_reference(
        slots in proptest::collection::vec(proptest::collection::vec(arb_filter(), 0..4), 1..8),
        topics in proptest::collection::vec(text(8), 1..8),
    ) {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        check(&slots, &topics, None);
    }
}
