//! The obvious topic-filter semantics, one filter at a time, straight from
//! selection.md. The optimised `FilterSet` is compared with it (tests) and measured
//! against it (benches).

use rustmq_etl_filter::{simple_fold, Filter, FilterKind, Glob, GlobToken};

fn fold(s: &str) -> String {
    s.chars().map(simple_fold).collect()
}

/// Whether the filter's pattern matches the topic, before `negate`.
pub fn pattern_matches(filter: &Filter, topic: &str) -> bool {
    let (pattern, text) = if filter.case_sensitive() || filter.kind() == FilterKind::Regex {
        (filter.pattern().to_owned(), topic.to_owned())
    } else {
        (fold(filter.pattern()), fold(topic))
    };
    match filter.kind() {
        FilterKind::Exact => text == pattern,
        FilterKind::Prefix => text.starts_with(&pattern),
        FilterKind::Suffix => text.ends_with(&pattern),
        FilterKind::Contains => text.contains(&pattern),
        FilterKind::Wildcard => {
            let glob = Glob::parse(&pattern).expect("valid wildcard");
            let topic: Vec<char> = text.chars().collect();
            glob_matches(glob.tokens(), &topic)
        }
        FilterKind::Regex => {
            let source = if filter.case_sensitive() {
                pattern
            } else {
                format!("(?i){pattern}")
            };
            regex::Regex::new(&source)
                .expect("valid regex")
                .is_match(&text)
        }
    }
}

/// Classic backtracking glob match over characters.
fn glob_matches(tokens: &[GlobToken], text: &[char]) -> bool {
    match tokens.split_first() {
        None => text.is_empty(),
        Some((GlobToken::Star, rest)) => (0..=text.len()).any(|i| glob_matches(rest, &text[i..])),
        Some((GlobToken::Question, rest)) => !text.is_empty() && glob_matches(rest, &text[1..]),
        Some((GlobToken::Literal(c), rest)) => {
            text.first() == Some(c) && glob_matches(rest, &text[1..])
        }
    }
}

/// Whether a module with these filters accepts the topic.
pub fn accepts(filters: &[Filter], topic: &str) -> bool {
    filters.is_empty()
        || filters
            .iter()
            .any(|f| pattern_matches(f, topic) != f.negate())
}
