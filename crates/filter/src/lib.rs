//! The topic-filter compiler.
//!
//! A [`FilterSetBuilder`] takes the topic filters of every module of a
//! configuration, one *slot* per module, and compiles them once into an immutable
//! [`FilterSet`] that answers "which slots accept this topic" without allocating
//! (after the caller's [`Cache`] has grown to fit):
//!
//! - exact patterns are looked up in a hash map;
//! - prefix, suffix and substring patterns, and wildcards that reduce to one of
//!   those (`logs.*`, `*.critical`, `*error*`), go through one Aho-Corasick automaton;
//! - every other wildcard and every regex goes into one multi-pattern
//!   `regex-automata` automaton, searched once for all of them;
//! - case-insensitive literals and wildcards are matched against the topic folded
//!   once with Unicode simple case folding ([`simple_fold`]); case-insensitive
//!   regexes use `(?i)`;
//! - a topic that is its own folding (no capitals, the usual case) is searched
//!   once by engines holding the case-sensitive and case-insensitive patterns
//!   together.
//!
//! The semantics are those of `selection.md`: a slot accepts a topic when it has no
//! filter, or when at least one of its filters accepts it; a filter accepts when its
//! pattern matches, XOR `negate`.
//!
//! ```
//! use rustmq_etl_filter::{Filter, FilterKind, FilterSetBuilder};
//!
//! let mut builder = FilterSetBuilder::new();
//! let logs = builder.add_slot([Filter::new(FilterKind::Wildcard, "logs.*", true, false)?]);
//! let not_debug = builder.add_slot([Filter::new(FilterKind::Suffix, ".DEBUG", false, true)?]);
//! let everything = builder.add_slot([]);
//! let set = builder.build()?;
//!
//! let mut cache = set.create_cache();
//! let accepted = set.matches("logs.app.debug", &mut cache);
//! assert!(accepted.contains(logs));
//! assert!(!accepted.contains(not_debug));
//! assert!(accepted.contains(everything));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod bits;
mod filter;
mod fold;
mod glob;
mod set;

pub use filter::{Filter, FilterError, FilterKind};
pub use fold::{simple_fold, simple_fold_into};
pub use glob::{Glob, GlobToken};
pub use set::{BuildError, Cache, FilterId, FilterSet, FilterSetBuilder, Matches, SlotId};
