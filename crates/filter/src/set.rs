//! The compiled filter set: builder, immutable matcher and the caller's scratch.

use std::fmt;
use std::sync::Arc;

use regex_automata::nfa::thompson::{self, pikevm::PikeVM, WhichCaptures};
use regex_automata::{hybrid, Input, MatchKind, PatternSet};
use rustc_hash::FxHashMap as HashMap;

use crate::bits::Bits;
use crate::filter::{regex_source, Filter, FilterKind};
use crate::glob::GlobToken;

/// Identifies one slot (usually one module) of a [`FilterSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(u32);

impl SlotId {
    /// The slot's index, in the order the slots were added.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Identifies one filter of a [`FilterSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilterId(u32);

impl FilterId {
    /// The filter's position among all the filters added, in the order
    /// they were added.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Why a filter set could not be compiled.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot compile the topic filters: {message}")]
pub struct BuildError {
    message: String,
    /// The filter too large on its own, when one is.
    filter: Option<FilterId>,
}

impl BuildError {
    fn of_all(message: String) -> Self {
        BuildError {
            message,
            filter: None,
        }
    }

    /// The filter whose pattern alone is too large to compile, when one is
    /// (else the patterns are too large together).
    pub fn filter(&self) -> Option<FilterId> {
        self.filter
    }
}

/// Collects filters slot by slot, then compiles them all at once.
#[derive(Debug, Default)]
pub struct FilterSetBuilder {
    filters: Vec<Filter>,
    filter_slot: Vec<u32>,
    slot_filters: Vec<(u32, u32)>,
}

impl FilterSetBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a slot accepting a topic when it has no filter or when any of
    /// `filters` accepts it.
    pub fn add_slot(&mut self, filters: impl IntoIterator<Item = Filter>) -> SlotId {
        let slot = u32::try_from(self.slot_filters.len()).expect("fewer than 2^32 slots");
        let start = self.filters.len() as u32;
        for filter in filters {
            self.filters.push(filter);
            self.filter_slot.push(slot);
        }
        self.slot_filters.push((start, self.filters.len() as u32));
        SlotId(slot)
    }

    /// Compiles every filter into one immutable matcher.
    pub fn build(self) -> Result<FilterSet, BuildError> {
        let mut raw = SideBuilder::default();
        let mut folded = SideBuilder::default();
        let mut always = Vec::new();
        for (i, filter) in self.filters.iter().enumerate() {
            let id = i as u32;
            let side = if filter.case_sensitive() {
                &mut raw
            } else {
                &mut folded
            };
            let fold = |s: &str| {
                if filter.case_sensitive() {
                    s.to_owned()
                } else {
                    let mut out = String::with_capacity(s.len());
                    crate::simple_fold_into(s, &mut out);
                    out
                }
            };
            match filter.kind() {
                FilterKind::Exact => side.exact(fold(filter.pattern()), id),
                FilterKind::Prefix | FilterKind::Suffix | FilterKind::Contains
                    if filter.pattern().is_empty() =>
                {
                    always.push(id)
                }
                FilterKind::Prefix => side.literal(fold(filter.pattern()), Anchor::Prefix, id),
                FilterKind::Suffix => side.literal(fold(filter.pattern()), Anchor::Suffix, id),
                FilterKind::Contains => side.literal(fold(filter.pattern()), Anchor::Contains, id),
                FilterKind::Regex => {
                    // `(?i)` does the folding: always match against the raw topic.
                    raw.regex(regex_source(filter.pattern(), filter.case_sensitive()), id)
                }
                FilterKind::Wildcard => {
                    let glob = if filter.case_sensitive() {
                        filter.glob()
                    } else {
                        filter.glob().folded()
                    };
                    match Shape::of(glob.tokens()) {
                        Shape::Always => always.push(id),
                        Shape::Exact(lit) => side.exact(lit, id),
                        Shape::Literal(lit, anchor) => side.literal(lit, anchor, id),
                        Shape::Other => side.regex(glob.to_regex(), id),
                    }
                }
            }
        }

        let slot_count = self.slot_filters.len();
        let mut empty_slots = Bits::with_len(slot_count);
        let mut negated_slots = Bits::with_len(slot_count);
        let mut negated_in_slot = vec![0u32; slot_count];
        for (slot, &(start, end)) in self.slot_filters.iter().enumerate() {
            if start == end {
                empty_slots.insert(slot);
            }
            negated_in_slot[slot] = self.filters[start as usize..end as usize]
                .iter()
                .filter(|f| f.negate())
                .count() as u32;
            if negated_in_slot[slot] > 0 {
                negated_slots.insert(slot);
            }
        }
        // Most topics are their own folding (lower case): then one search of
        // every pattern together does the work of the two sides.
        let both = if raw.is_empty() || folded.is_empty() {
            None
        } else {
            let mut both = raw.clone();
            both.merge(&folded);
            Some(both.build(&self.filters)?)
        };
        let raw = raw.build(&self.filters)?;
        let folded = if folded.is_empty() {
            None
        } else {
            Some(folded.build(&self.filters)?)
        };
        Ok(FilterSet {
            inner: Arc::new(Inner {
                negate: self.filters.iter().map(Filter::negate).collect(),
                filters: self.filters,
                filter_slot: self.filter_slot,
                slot_filters: self.slot_filters,
                always,
                empty_slots,
                negated_slots,
                negated_in_slot,
                raw,
                folded,
                both,
            }),
        })
    }
}

/// What a wildcard pattern reduces to.
enum Shape {
    Always,
    Exact(String),
    Literal(String, Anchor),
    Other,
}

impl Shape {
    fn of(tokens: &[GlobToken]) -> Shape {
        let lead = tokens.iter().take_while(|t| **t == GlobToken::Star).count();
        if lead == tokens.len() {
            return if lead == 0 {
                Shape::Exact(String::new())
            } else {
                Shape::Always
            };
        }
        let trail = tokens
            .iter()
            .rev()
            .take_while(|t| **t == GlobToken::Star)
            .count();
        let mut literal = String::new();
        for token in &tokens[lead..tokens.len() - trail] {
            match token {
                GlobToken::Literal(c) => literal.push(*c),
                _ => return Shape::Other,
            }
        }
        match (lead > 0, trail > 0) {
            (false, false) => Shape::Exact(literal),
            (false, true) => Shape::Literal(literal, Anchor::Prefix),
            (true, false) => Shape::Literal(literal, Anchor::Suffix),
            (true, true) => Shape::Literal(literal, Anchor::Contains),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Prefix,
    Suffix,
    Contains,
}

/// Distinct patterns, each with the filters that use it.
#[derive(Clone)]
struct Dedup<K, V = u32> {
    patterns: Vec<K>,
    index: HashMap<K, usize>,
    filters: Vec<Vec<V>>,
}

impl<K, V> Default for Dedup<K, V> {
    fn default() -> Self {
        Dedup {
            patterns: Vec::new(),
            index: HashMap::default(),
            filters: Vec::new(),
        }
    }
}

impl<K: Clone + Eq + std::hash::Hash, V> Dedup<K, V> {
    fn add(&mut self, pattern: K, id: V) {
        let next = self.patterns.len();
        let index = *self.index.entry(pattern.clone()).or_insert(next);
        if index == next {
            self.patterns.push(pattern);
            self.filters.push(Vec::new());
        }
        self.filters[index].push(id);
    }

    fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    fn merge(&mut self, other: &Self)
    where
        V: Copy,
    {
        for (pattern, ids) in other.patterns.iter().zip(&other.filters) {
            for &id in ids {
                self.add(pattern.clone(), id);
            }
        }
    }
}

/// The engines for one view of the topic (as given, or folded).
#[derive(Default, Clone)]
struct SideBuilder {
    exact: Dedup<String>,
    /// Prefix, suffix and substring patterns, each filter with its anchor.
    literals: Dedup<String, (u32, Anchor)>,
    regexes: Dedup<String>,
}

impl SideBuilder {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.literals.is_empty() && self.regexes.is_empty()
    }

    fn merge(&mut self, other: &SideBuilder) {
        self.exact.merge(&other.exact);
        self.literals.merge(&other.literals);
        self.regexes.merge(&other.regexes);
    }

    fn exact(&mut self, pattern: String, id: u32) {
        self.exact.add(pattern, id);
    }

    fn literal(&mut self, pattern: String, anchor: Anchor, id: u32) {
        self.literals.add(pattern, (id, anchor));
    }

    fn regex(&mut self, source: String, id: u32) {
        self.regexes.add(source, id);
    }

    fn build(self, filters: &[Filter]) -> Result<Side, BuildError> {
        let regexes = if self.regexes.is_empty() {
            None
        } else {
            Some(Regexes::build(self.regexes, filters)?)
        };
        Ok(Side {
            exact: self
                .exact
                .patterns
                .into_iter()
                .zip(self.exact.filters)
                .collect(),
            literals: Literals::build(self.literals)?,
            regexes,
        })
    }
}

/// Prefix, suffix and substring patterns in one Aho-Corasick DFA, walked byte by
/// byte so that every pattern ending at every position is seen; a prefix counts
/// only where it ends at its own length, a suffix only at the topic's end.
struct Literals {
    dfa: aho_corasick::dfa::DFA,
    filters: Vec<Vec<(u32, Anchor)>>,
}

impl Literals {
    fn build(patterns: Dedup<String, (u32, Anchor)>) -> Result<Option<Literals>, BuildError> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let dfa = aho_corasick::dfa::DFA::builder()
            .match_kind(aho_corasick::MatchKind::Standard)
            .build(&patterns.patterns)
            .map_err(|e| BuildError::of_all(format!("literal patterns: {e}")))?;
        Ok(Some(Literals {
            dfa,
            filters: patterns.filters,
        }))
    }

    #[inline]
    fn walk(&self, text: &[u8], hit: &mut impl FnMut(u32)) {
        use aho_corasick::automaton::Automaton;
        use aho_corasick::Anchored;
        let dfa = &self.dfa;
        let Ok(mut state) = dfa.start_state(Anchored::No) else {
            return;
        };
        // Keep this loop small: the state must stay in a register.
        for (at, &byte) in text.iter().enumerate() {
            state = dfa.next_state(Anchored::No, state, byte);
            if dfa.is_special(state) && dfa.is_match(state) {
                self.report(state, at + 1, text.len(), hit);
            }
        }
    }

    #[inline(never)]
    fn report(
        &self,
        state: aho_corasick::automaton::StateID,
        end: usize,
        len: usize,
        hit: &mut dyn FnMut(u32),
    ) {
        use aho_corasick::automaton::Automaton;
        for i in 0..self.dfa.match_len(state) {
            let pattern = self.dfa.match_pattern(state, i);
            let starts_at_zero = self.dfa.pattern_len(pattern) == end;
            for &(f, anchor) in &self.filters[pattern.as_usize()] {
                let at = match anchor {
                    Anchor::Prefix => starts_at_zero,
                    Anchor::Suffix => end == len,
                    Anchor::Contains => true,
                };
                if at {
                    hit(f);
                }
            }
        }
    }
}

/// The most an NFA of the regex and wildcard patterns may take.
const NFA_LIMIT: usize = 256 << 20;
/// The lazy DFA's cache: each engine thread's, for the patterns together.
const DFA_CACHE: usize = 16 << 20;

/// Every regex (and every wildcard that is not a plain literal) of a side in one
/// automaton, searched once for all of them.
///
/// The lazy DFA walks the topic once and reports each pattern as it matches, so
/// nothing proportional to the number of patterns is cleared or scanned per
/// topic. Where it cannot go on (a Unicode word boundary next to a non-ASCII
/// byte), the PikeVM built from the same NFA answers instead.
struct Regexes {
    dfa: hybrid::dfa::DFA,
    fallback: PikeVM,
    filters: Vec<Vec<u32>>,
}

impl Regexes {
    fn build(patterns: Dedup<String>, filters: &[Filter]) -> Result<Regexes, BuildError> {
        // Every pattern parsed when its filter was made, so a failure here is
        // a size limit: the NFA's, or the lazy DFA's cache, which must hold
        // a few states of it. Named by the pattern too large on its own, if
        // one is.
        let too_large = |e: String| match patterns
            .patterns
            .iter()
            .position(|p| Self::compile(std::slice::from_ref(p)).is_err())
        {
            Some(p) => {
                let id = patterns.filters[p][0];
                BuildError {
                    message: format!("{}: {e}", filters[id as usize]),
                    filter: Some(FilterId(id)),
                }
            }
            None => BuildError::of_all(format!("the regex and wildcard patterns together: {e}")),
        };
        let (nfa, dfa) = Self::compile(&patterns.patterns).map_err(too_large)?;
        let fallback = PikeVM::builder()
            .configure(PikeVM::config().match_kind(MatchKind::All))
            .build_from_nfa(nfa)
            .map_err(|e| BuildError::of_all(format!("regex and wildcard patterns: {e}")))?;
        Ok(Regexes {
            dfa,
            fallback,
            filters: patterns.filters,
        })
    }

    /// The NFA of `patterns` and its lazy DFA, or why they are too large.
    fn compile(patterns: &[String]) -> Result<(thompson::NFA, hybrid::dfa::DFA), String> {
        let mut compiler = thompson::Compiler::new();
        compiler.configure(
            thompson::Config::new()
                .which_captures(WhichCaptures::None)
                .nfa_size_limit(Some(NFA_LIMIT)),
        );
        let nfa = compiler.build_many(patterns).map_err(|e| {
            format!(
                "too large to match: its automaton would take more than {} MiB; write fewer or \
                 smaller repetitions ({e})",
                NFA_LIMIT >> 20
            )
        })?;
        let dfa = hybrid::dfa::DFA::builder()
            .configure(
                hybrid::dfa::Config::new()
                    .match_kind(MatchKind::All)
                    .unicode_word_boundary(true)
                    .cache_capacity(DFA_CACHE),
            )
            .build_from_nfa(nfa.clone())
            .map_err(|e| {
                format!(
                    "too large to match: a topic's matching would take more than the {} MiB it \
                     may use; write fewer or smaller repetitions ({e})",
                    DFA_CACHE >> 20
                )
            })?;
        Ok((nfa, dfa))
    }

    #[inline]
    fn search(&self, text: &str, cache: &mut RegexCache, hit: &mut impl FnMut(u32)) {
        if self.walk(text, &mut cache.dfa, hit).is_none() {
            self.fall_back(text, cache, hit);
        }
    }

    /// The lazy DFA gave up: find every matching pattern the slow way (those
    /// already reported are reported again; hits are deduplicated).
    #[cold]
    fn fall_back(&self, text: &str, cache: &mut RegexCache, hit: &mut impl FnMut(u32)) {
        cache.patterns.clear();
        let pikevm = cache
            .pikevm
            .get_or_insert_with(|| self.fallback.create_cache());
        self.fallback
            .which_overlapping_matches(pikevm, &Input::new(text), &mut cache.patterns);
        for p in cache.patterns.iter() {
            self.filters[p.as_usize()].iter().for_each(|&f| hit(f));
        }
    }

    /// Walks the lazy DFA over the whole topic once and reports every pattern of
    /// every match state on the way (with `MatchKind::All` a match state holds
    /// every pattern matching there). Only whether a pattern matches counts, not
    /// where, so this is leaner than the crate's resumable overlapping search.
    /// `None` when the DFA gives up (a quit byte).
    #[inline]
    fn walk(
        &self,
        text: &str,
        cache: &mut hybrid::dfa::Cache,
        hit: &mut impl FnMut(u32),
    ) -> Option<()> {
        let mut state = self.start(text, cache)?;
        for &byte in text.as_bytes() {
            match self.step(cache, state, byte, hit) {
                Step::Live(next) => state = next,
                Step::Dead => return Some(()),
                Step::GaveUp => return None,
            }
        }
        self.finish(cache, state, hit)
    }

    #[inline]
    fn start(&self, text: &str, cache: &mut hybrid::dfa::Cache) -> Option<hybrid::LazyStateID> {
        self.dfa.start_state_forward(cache, &Input::new(text)).ok()
    }

    /// One byte of the walk, reporting the patterns of a match state.
    #[inline(always)]
    fn step(
        &self,
        cache: &mut hybrid::dfa::Cache,
        state: hybrid::LazyStateID,
        byte: u8,
        hit: &mut impl FnMut(u32),
    ) -> Step {
        let Ok(state) = self.dfa.next_state(cache, state, byte) else {
            return Step::GaveUp;
        };
        if state.is_tagged() {
            if state.is_match() {
                self.report(cache, state, hit);
            } else if state.is_dead() {
                return Step::Dead;
            } else if state.is_quit() {
                return Step::GaveUp;
            }
        }
        Step::Live(state)
    }

    /// The end of the topic: matches that end there.
    #[inline]
    fn finish(
        &self,
        cache: &mut hybrid::dfa::Cache,
        state: hybrid::LazyStateID,
        hit: &mut impl FnMut(u32),
    ) -> Option<()> {
        let state = self.dfa.next_eoi_state(cache, state).ok()?;
        if state.is_match() {
            self.report(cache, state, hit);
        }
        Some(())
    }

    #[inline(never)]
    fn report(
        &self,
        cache: &hybrid::dfa::Cache,
        state: hybrid::LazyStateID,
        hit: &mut dyn FnMut(u32),
    ) {
        for i in 0..self.dfa.match_len(cache, state) {
            let pattern = self.dfa.match_pattern(cache, state, i);
            self.filters[pattern.as_usize()]
                .iter()
                .for_each(|&f| hit(f));
        }
    }
}

/// Where the regex walk stands after a byte.
enum Step {
    Live(hybrid::LazyStateID),
    /// No pattern can match any more.
    Dead,
    /// The lazy DFA cannot go on (a quit byte): the fallback must answer.
    GaveUp,
}

struct Side {
    exact: HashMap<String, Vec<u32>>,
    literals: Option<Literals>,
    regexes: Option<Regexes>,
}

impl Side {
    fn create_cache(&self) -> SideCache {
        SideCache {
            regexes: self.regexes.as_ref().map(|r| RegexCache {
                dfa: r.dfa.create_cache(),
                pikevm: None,
                patterns: PatternSet::new(r.filters.len()),
            }),
        }
    }

    #[inline]
    fn search(&self, text: &str, cache: &mut SideCache, hit: &mut impl FnMut(u32)) {
        if let Some(ids) = self.exact.get(text) {
            ids.iter().for_each(|&f| hit(f));
        }
        match (
            &self.literals,
            self.regexes.as_ref().zip(cache.regexes.as_mut()),
        ) {
            (Some(literals), Some((regexes, regex_cache))) => {
                if !walk_both(literals, regexes, text, &mut regex_cache.dfa, hit) {
                    regexes.fall_back(text, regex_cache, hit);
                }
            }
            (Some(literals), None) => literals.walk(text.as_bytes(), hit),
            (None, Some((regexes, regex_cache))) => regexes.search(text, regex_cache, hit),
            (None, None) => {}
        }
    }
}

/// The literal and regex automata walked in one loop over the topic: each walk
/// is a chain of dependent loads (state, byte class, next state), and two
/// chains in one loop overlap where two loops would run one after the other.
/// Returns `false` when the lazy DFA gave up (the literals are walked to the end
/// regardless).
#[inline]
fn walk_both(
    literals: &Literals,
    regexes: &Regexes,
    text: &str,
    cache: &mut hybrid::dfa::Cache,
    hit: &mut impl FnMut(u32),
) -> bool {
    use aho_corasick::automaton::Automaton;
    use aho_corasick::Anchored;
    let ac = &literals.dfa;
    let Ok(mut literal) = ac.start_state(Anchored::No) else {
        return regexes.walk(text, cache, hit).is_some();
    };
    let Some(mut regex) = regexes.start(text, cache) else {
        literals.walk(text.as_bytes(), hit);
        return false;
    };
    let bytes = text.as_bytes();
    let mut live = true;
    let mut gave_up = false;
    for (at, &byte) in bytes.iter().enumerate() {
        literal = ac.next_state(Anchored::No, literal, byte);
        if ac.is_special(literal) && ac.is_match(literal) {
            literals.report(literal, at + 1, bytes.len(), hit);
        }
        if live {
            match regexes.step(cache, regex, byte, hit) {
                Step::Live(next) => regex = next,
                Step::Dead => live = false,
                Step::GaveUp => (live, gave_up) = (false, true),
            }
        }
    }
    if live && regexes.finish(cache, regex, hit).is_none() {
        gave_up = true;
    }
    !gave_up
}

struct SideCache {
    regexes: Option<RegexCache>,
}

struct RegexCache {
    dfa: hybrid::dfa::Cache,
    /// Made on the first fallback: most sets never need one.
    pikevm: Option<thompson::pikevm::Cache>,
    patterns: PatternSet,
}

struct Inner {
    filters: Vec<Filter>,
    negate: Vec<bool>,
    filter_slot: Vec<u32>,
    slot_filters: Vec<(u32, u32)>,
    /// Filters whose pattern matches every topic.
    always: Vec<u32>,
    /// Slots without filters: they accept every topic.
    empty_slots: Bits,
    /// Slots with negated filters: they accept unless every one of those matches.
    negated_slots: Bits,
    /// How many negated filters each slot has.
    negated_in_slot: Vec<u32>,
    /// Case-sensitive filters (and every `Regex` filter: `(?i)` folds for them).
    raw: Side,
    /// Case-insensitive filters, searched in the folded topic.
    folded: Option<Side>,
    /// Both of them together, for a topic that is its own folding.
    both: Option<Side>,
}

/// Every topic filter of a configuration compiled into one matcher.
///
/// Immutable, `Send + Sync` and cheap to clone. Matching needs a [`Cache`] from
/// [`FilterSet::create_cache`]; keep one per thread and reuse it.
#[derive(Clone)]
pub struct FilterSet {
    inner: Arc<Inner>,
}

impl fmt::Debug for FilterSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterSet")
            .field("slots", &self.inner.slot_filters.len())
            .field("filters", &self.inner.filters.len())
            .finish()
    }
}

/// The scratch space of [`FilterSet::matches`]; it belongs to one [`FilterSet`].
pub struct Cache {
    pattern_hits: Bits,
    accepted: Bits,
    /// Slots accepted by a filter that is not negated.
    positive: Bits,
    /// Per slot, how many of its negated filters matched (zero but for `touched`).
    negated_hits: Vec<u32>,
    /// The slots whose `negated_hits` is not zero.
    touched: Vec<u32>,
    folded_topic: String,
    raw: SideCache,
    folded: Option<SideCache>,
    both: Option<SideCache>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").finish_non_exhaustive()
    }
}

impl FilterSet {
    /// Scratch space for [`FilterSet::matches`].
    pub fn create_cache(&self) -> Cache {
        let inner = &*self.inner;
        Cache {
            pattern_hits: Bits::with_len(inner.filters.len()),
            accepted: Bits::with_len(inner.slot_filters.len()),
            positive: Bits::with_len(inner.slot_filters.len()),
            negated_hits: vec![0; inner.slot_filters.len()],
            touched: Vec::new(),
            folded_topic: String::new(),
            raw: inner.raw.create_cache(),
            folded: inner.folded.as_ref().map(Side::create_cache),
            both: inner.both.as_ref().map(Side::create_cache),
        }
    }

    /// Matches `topic` against every filter; the result tells which slots accept it
    /// and which patterns matched.
    pub fn matches<'c>(&self, topic: &str, cache: &'c mut Cache) -> Matches<'c> {
        let inner = &*self.inner;
        cache.pattern_hits.clear();
        cache.positive.clear();
        let Cache {
            pattern_hits,
            accepted,
            positive,
            negated_hits,
            touched,
            folded_topic,
            raw,
            folded,
            both,
        } = cache;
        let mut hit = |f: u32| {
            if pattern_hits.insert(f as usize) {
                let slot = inner.filter_slot[f as usize];
                if inner.negate[f as usize] {
                    if negated_hits[slot as usize] == 0 {
                        touched.push(slot);
                    }
                    negated_hits[slot as usize] += 1;
                } else {
                    positive.insert(slot as usize);
                }
            }
        };
        inner.always.iter().for_each(|&f| hit(f));
        match inner.folded.as_ref().zip(folded.as_mut()) {
            None => inner.raw.search(topic, raw, &mut hit),
            Some((folded, folded_cache)) => {
                // Most topics are their own folding; for ASCII that is known
                // without folding.
                let ascii = topic.is_ascii();
                let own_folding = if ascii {
                    !has_ascii_capital(topic.as_bytes())
                } else {
                    folded_topic.clear();
                    crate::simple_fold_into(topic, folded_topic);
                    folded_topic == topic
                };
                match inner.both.as_ref().zip(both.as_mut()) {
                    Some((both, both_cache)) if own_folding => {
                        both.search(topic, both_cache, &mut hit)
                    }
                    _ => {
                        if ascii && !own_folding {
                            folded_topic.clear();
                            crate::simple_fold_into(topic, folded_topic);
                        }
                        let folded_text = if own_folding { topic } else { folded_topic };
                        inner.raw.search(topic, raw, &mut hit);
                        folded.search(folded_text, folded_cache, &mut hit);
                    }
                }
            }
        }
        // A slot with negated filters accepts unless all of them matched (and no
        // other filter of it accepts).
        accepted.set_union3(&inner.empty_slots, positive, &inner.negated_slots);
        for slot in touched.drain(..) {
            let slot = slot as usize;
            if negated_hits[slot] == inner.negated_in_slot[slot] && !positive.contains(slot) {
                accepted.remove(slot);
            }
            negated_hits[slot] = 0;
        }
        Matches { cache }
    }

    /// The number of slots.
    pub fn slot_len(&self) -> usize {
        self.inner.slot_filters.len()
    }

    /// The filters of `slot`, in the order they were added.
    pub fn slot_filters(&self, slot: SlotId) -> impl ExactSizeIterator<Item = (FilterId, &Filter)> {
        let (start, end) = self.inner.slot_filters[slot.index()];
        (start..end).map(move |f| (FilterId(f), &self.inner.filters[f as usize]))
    }
}

/// Whether ASCII `bytes` hold a capital letter, eight bytes a step: a byte below
/// 0x80 plus 0x3f reaches 0x80 exactly when it is at least `A`, plus 0x25 exactly
/// when it is past `Z`, and neither sum carries into the next byte.
fn has_ascii_capital(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let capitals = |word: u64| (word + 0x3f * ONES) & !(word + 0x25 * ONES) & (0x80 * ONES);
    let mut chunks = bytes.chunks_exact(8);
    let mut found = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        found |= capitals(u64::from_le_bytes(word));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    found |= capitals(u64::from_le_bytes(tail));
    found != 0
}

/// The outcome of [`FilterSet::matches`] for one topic.
#[derive(Debug)]
pub struct Matches<'c> {
    cache: &'c Cache,
}

impl Matches<'_> {
    /// Whether `slot` accepts the topic.
    #[inline]
    pub fn contains(&self, slot: SlotId) -> bool {
        self.cache.accepted.contains(slot.index())
    }

    /// How many slots accept the topic.
    pub fn len(&self) -> usize {
        self.cache.accepted.count()
    }

    /// Whether no slot accepts the topic.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slots accepting the topic, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = SlotId> + '_ {
        self.cache.accepted.iter().map(|s| SlotId(s as u32))
    }

    /// Whether the filter's pattern matched the topic (before `negate` is applied).
    pub fn pattern_matched(&self, filter: FilterId) -> bool {
        self.cache.pattern_hits.contains(filter.0 as usize)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::has_ascii_capital;
    use crate::{Filter, FilterKind, FilterSetBuilder};

    /// A regex too large to match within its limits is refused at build,
    /// named, and said to be too large, whichever limit it passes: the
    /// lazy DFA's cache, or the NFA's size.
    #[test]
    fn a_pattern_too_large_to_match_is_named() {
        for (pattern, limit) in [
            (r"(\w{100}){100}", "16 MiB it may use"),
            (r"(\w{1000}){1000}", "more than 256 MiB"),
        ] {
            let mut builder = FilterSetBuilder::new();
            let small = Filter::new(FilterKind::Regex, "^a+$", true, false).unwrap();
            let large = Filter::new(FilterKind::Regex, pattern, true, false).unwrap();
            builder.add_slot(vec![small]);
            builder.add_slot(vec![large.clone()]);
            let Err(err) = builder.build() else {
                panic!("{pattern} was not refused")
            };
            assert_eq!(err.filter().map(|f| f.index()), Some(1), "{err}");
            let text = err.to_string();
            assert!(text.contains(&large.to_string()), "{text}");
            assert!(text.contains("too large to match"), "{text}");
            assert!(text.contains(limit), "{text}");
        }
    }

    #[test]
    fn every_ascii_byte_at_every_position() {
        for byte in 0u8..0x80 {
            for len in 1..20 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    assert_eq!(
                        has_ascii_capital(&bytes),
                        byte.is_ascii_uppercase(),
                        "{byte:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_obvious_check(text in "[ -~]{0,40}") {
            prop_assert_eq!(
                has_ascii_capital(text.as_bytes()),
                text.bytes().any(|b| b.is_ascii_uppercase())
            );
        }
    }
}
