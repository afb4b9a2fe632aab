//! The condition evaluator.
//!
//! A [`ConditionSetBuilder`] compiles the conditional rules of every module of a
//! configuration, one *group* per module, into an immutable [`ConditionSet`].
//! Regexes are compiled and values converted once, at build time. For each
//! message a [`Context`] answers whether a group's rules all hold; the payload is
//! read as JSON once per message however many rules read it (twice when the
//! fast pass leaves it to serde_json, such as a payload that is not JSON, and
//! once more to explain a rule that failed on it), only the fields some rule
//! names are kept, and it is not read at all when no rule of the groups asked
//! about needs it. The semantics are those of `selection.md`.
//!
//! ```
//! use rustmq_etl_condition::{ConditionSetBuilder, Operator, Rule, Subject};
//! use rustmq_etl_core::Message;
//!
//! let mut builder = ConditionSetBuilder::new();
//! let celsius = builder.add_group([Rule::new(
//!     Subject::payload_field("$.unit")?,
//!     Operator::Equals,
//!     "celsius".into(),
//!     false,
//! )?]);
//! let set = builder.build();
//!
//! let message = Message::new("iot.sensors.temperature", r#"{"unit": "celsius", "reading": 21.5}"#);
//! let mut scratch = set.create_scratch();
//! let mut context = set.context(&message, 0, &mut scratch);
//! assert!(context.holds(celsius));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod extract;
mod path;
mod rule;
mod set;
mod skim;
mod value;

pub use path::{JsonPath, PathError, PathSegment};
pub use rule::{Operator, Rule, RuleError, Subject};
pub use set::{ConditionSet, ConditionSetBuilder, Context, GroupId, RuleFailure, Scratch};
