//! The obvious topic-filter semantics, one filter at a time, straight from
//! selection.md. The optimised `FilterSet` is compared with it (tests) and measured
//! against it (benches). Regexes are compiled once, in `Reference::new`; all else
//! is done afresh for every filter and topic.
// Each user (tests, benches) uses a different part.
#![allow(dead_code)]

use rustmq_etl_filter::{simple_fold, Filter, FilterKind, Glob, GlobToken};

fn fold(s: &str) -> String {
    s.chars().map(simple_fold).collect()
}

/// Filters grouped by slot, regexes compiled.
pub struct Reference {
    slots: Vec<Vec<(Filter, Option<regex::Regex>)>>,
}

impl Reference {
    pub fn new(slots: &[Vec<Filter>]) -> Self {
        let compile = |f: &Filter| {
            (f.kind() == FilterKind::Regex).then(|| {
                let source = if f.case_sensitive() {
                    f.pattern().to_owned()
                } else {
                    format!("(?i){}", f.pattern())
                };
                regex::Regex::new(&source).expect("valid regex")
            })
        };
        Reference {
            slots: slots
                .iter()
                .map(|s| s.iter().map(|f| (f.clone(), compile(f))).collect())
                .collect(),
        }
    }

    /// Whether slot `slot` accepts the topic: no filters, or any filter accepts.
    pub fn accepts(&self, slot: usize, topic: &str) -> bool {
        let filters = &self.slots[slot];
        filters.is_empty()
            || filters
                .iter()
                .any(|(f, re)| pattern_matches(f, re.as_ref(), topic) != f.negate())
    }

    /// Whether the `index`th filter of `slot` matches, before `negate`.
    pub fn pattern_matches(&self, slot: usize, index: usize, topic: &str) -> bool {
        let (f, re) = &self.slots[slot][index];
        pattern_matches(f, re.as_ref(), topic)
    }
}

/// Whether the filter's pattern matches the topic, before `negate`.
fn pattern_matches(filter: &Filter, regex: Option<&regex::Regex>, topic: &str) -> bool {
    if let Some(re) = regex {
        return re.is_match(topic);
    }
    let (pattern, text) = if filter.case_sensitive() {
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

/// A glob match over characters, the plain way: which prefixes of the text
/// the tokens so far match, token by token. (A backtracking match is as
/// plain, but exponential in the stars: the fuzz target timed out on a
/// pattern of twenty of them.)
fn glob_matches(tokens: &[GlobToken], text: &[char]) -> bool {
    // `matched[j]`: the tokens so far match `text[..j]`.
    let mut matched = vec![false; text.len() + 1];
    let mut next = vec![false; text.len() + 1];
    matched[0] = true;
    for token in tokens {
        // The star takes `text[k..j]` for some k: any prefix up to j matched.
        let mut any_before = false;
        for j in 0..=text.len() {
            next[j] = match token {
                GlobToken::Star => {
                    any_before |= matched[j];
                    any_before
                }
                GlobToken::Question => j > 0 && matched[j - 1],
                GlobToken::Literal(c) => j > 0 && matched[j - 1] && text[j - 1] == *c,
            };
        }
        std::mem::swap(&mut matched, &mut next);
    }
    matched[text.len()]
}
