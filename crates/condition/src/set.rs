//! The compiled condition set and the per-message evaluation context.

use std::fmt;
use std::sync::Arc;

use rustmq_etl_core::{Excerpt, Message};

use crate::extract::{Extracted, PathTrie};
use crate::rule::{Rule, Subject};
use crate::value::{self, JsonRef, Num};

/// Identifies one group of rules (usually one module's) in a [`ConditionSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(u32);

impl GroupId {
    /// The group's index, in the order the groups were added.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Collects rules group by group, then compiles them.
#[derive(Debug, Default)]
pub struct ConditionSetBuilder {
    rules: Vec<Rule>,
    groups: Vec<(u32, u32)>,
}

impl ConditionSetBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a group that holds when every one of `rules` holds (an empty group
    /// always holds).
    pub fn add_group(&mut self, rules: impl IntoIterator<Item = Rule>) -> GroupId {
        let group = u32::try_from(self.groups.len()).expect("fewer than 2^32 groups");
        let start = self.rules.len() as u32;
        self.rules.extend(rules);
        self.groups.push((start, self.rules.len() as u32));
        GroupId(group)
    }

    /// Merges the payload paths of every rule and freezes the set.
    pub fn build(self) -> ConditionSet {
        let mut trie = PathTrie::new();
        let path_slot = self
            .rules
            .iter()
            .map(|rule| match rule.subject() {
                Subject::PayloadField(path) => Some(trie.insert(path)),
                _ => None,
            })
            .collect();
        ConditionSet {
            inner: Arc::new(Inner {
                rules: self.rules,
                groups: self.groups,
                path_slot,
                trie,
            }),
        }
    }
}

struct Inner {
    rules: Vec<Rule>,
    groups: Vec<(u32, u32)>,
    /// For each `PayloadField` rule, the slot of its path.
    path_slot: Vec<Option<usize>>,
    trie: PathTrie,
}

/// Every conditional rule of a configuration, compiled.
///
/// Immutable, `Send + Sync` and cheap to clone.
#[derive(Clone)]
pub struct ConditionSet {
    inner: Arc<Inner>,
}

impl fmt::Debug for ConditionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionSet")
            .field("groups", &self.inner.groups.len())
            .field("rules", &self.inner.rules.len())
            .field("payload_paths", &self.inner.trie.slot_len())
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    Unread,
    Json,
    NotJson,
}

/// Reusable per-thread scratch space for evaluating messages.
#[derive(Debug)]
pub struct Scratch {
    extracted: Vec<Option<Extracted>>,
    payload: Payload,
    payload_reads: u64,
}

impl Scratch {
    /// How many payloads this scratch has read as JSON so far: at most one per
    /// message, none for messages whose rules never looked at the payload.
    pub fn payload_reads(&self) -> u64 {
        self.payload_reads
    }
}

/// Why a group does not hold: the first rule that does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFailure {
    /// The rule's position in its group.
    pub index: usize,
    /// The rule, as text.
    pub rule: String,
    /// What the message had instead.
    pub reason: String,
}

impl ConditionSet {
    /// Scratch space for [`ConditionSet::context`]; keep one per thread.
    pub fn create_scratch(&self) -> Scratch {
        Scratch {
            extracted: Vec::with_capacity(self.inner.trie.slot_len()),
            payload: Payload::Unread,
            payload_reads: 0,
        }
    }

    /// The evaluation context of one message. `now_ms` is the clock `MessageAge`
    /// reads (milliseconds since the Unix epoch).
    pub fn context<'a>(
        &'a self,
        message: &'a Message,
        now_ms: i64,
        scratch: &'a mut Scratch,
    ) -> Context<'a> {
        scratch.payload = Payload::Unread;
        Context {
            inner: &self.inner,
            message,
            now_ms,
            scratch,
            why_not_json: None,
        }
    }

    /// The rules of `group`, in order.
    pub fn group_rules(&self, group: GroupId) -> &[Rule] {
        let (start, end) = self.inner.groups[group.index()];
        &self.inner.rules[start as usize..end as usize]
    }

    /// Whether any rule reads the payload.
    pub fn reads_payload(&self) -> bool {
        self.inner.trie.slot_len() > 0
    }
}

/// Evaluates groups of rules against one message, reading its payload at most
/// once (and only if a rule asked about needs it).
pub struct Context<'a> {
    inner: &'a Inner,
    message: &'a Message,
    now_ms: i64,
    scratch: &'a mut Scratch,
    /// Why the payload is not JSON, once a reason has needed it (read again
    /// once per message, not once per rule).
    why_not_json: Option<String>,
}

impl Context<'_> {
    /// Whether every rule of `group` holds.
    pub fn holds(&mut self, group: GroupId) -> bool {
        let inner = self.inner;
        let (start, end) = inner.groups[group.index()];
        (start as usize..end as usize).all(|r| inner.rules[r].holds(self.subject(r)))
    }

    /// The first rule of `group` that does not hold, with the reason; `None` when
    /// the group holds.
    pub fn first_failure(&mut self, group: GroupId) -> Option<RuleFailure> {
        let inner = self.inner;
        let (start, end) = inner.groups[group.index()];
        (start as usize..end as usize).find_map(|r| {
            let subject = self.subject(r);
            let rule = &inner.rules[r];
            if rule.holds(subject) {
                return None;
            }
            let reason = match subject {
                None => {
                    let not_json = matches!(rule.subject(), Subject::PayloadField(_))
                        && self.scratch.payload == Payload::NotJson;
                    let payload = &self.message.payload;
                    let why = not_json.then(|| {
                        self.why_not_json
                            .get_or_insert_with(|| why_not_json(payload))
                            .as_str()
                    });
                    format!("{} is absent", describe_absent(rule.subject(), why))
                }
                Some(_) if rule.negate() => {
                    "the comparison is true and the rule is negated".to_owned()
                }
                Some(s) => format!("{} is {}", rule.subject(), describe(s)),
            };
            Some(RuleFailure {
                index: r - start as usize,
                rule: rule.to_string(),
                reason,
            })
        })
    }

    /// Whether the payload is JSON (reads it if no rule has yet).
    pub fn payload_is_json(&mut self) -> bool {
        self.read_payload();
        self.scratch.payload == Payload::Json
    }

    fn read_payload(&mut self) {
        if self.scratch.payload == Payload::Unread {
            self.scratch.payload_reads += 1;
            let is_json = self
                .inner
                .trie
                .extract(&self.message.payload, &mut self.scratch.extracted);
            self.scratch.payload = if is_json {
                Payload::Json
            } else {
                Payload::NotJson
            };
        }
    }

    fn subject(&mut self, rule: usize) -> Option<value::Subject<'_>> {
        match self.inner.rules[rule].subject() {
            Subject::HeaderValue(name) => {
                self.message.headers.get(name).map(value::Subject::Header)
            }
            Subject::MessageSize => {
                Some(value::Subject::Num(Num::Int(self.message.size() as i128)))
            }
            Subject::MessageAge => self
                .message
                .timestamp_ms
                .map(|t| value::Subject::Num(Num::Int(i128::from(self.now_ms) - i128::from(t)))),
            Subject::PayloadField(_) => {
                self.read_payload();
                let slot = self.inner.path_slot[rule]?;
                let payload = &self.message.payload[..];
                self.scratch.extracted[slot]
                    .as_ref()
                    .map(|e| value::Subject::Json(e.as_ref(payload)))
            }
        }
    }
}

/// Why `payload`, found not JSON, is not (read again: texts for people
/// only). JSON by RFC 8259 may still be too deep or hold too large a number
/// for serde_json, whose reading the rules follow (docs/selection.md).
fn why_not_json(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Err(e) => format!("not UTF-8 at byte {}", e.valid_up_to()),
        Ok(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
                format!("nested deeper than 128 levels: {e}")
            }
            Err(e) => e.to_string(),
            Ok(_) => "unreadable".to_owned(),
        },
    }
}

/// `not_json`: why the payload is not JSON, if reading it for this message
/// found it not JSON (it was read, since a payload rule asked for it).
fn describe_absent(subject: &Subject, not_json: Option<&str>) -> String {
    match subject {
        Subject::PayloadField(path) if not_json.is_some() => {
            let why = not_json.unwrap_or_default();
            format!("payload field {path} (the payload is not JSON: {why}), so it")
        }
        Subject::MessageAge => "the timestamp needed for message age".to_owned(),
        other => other.to_string(),
    }
}

fn describe(subject: value::Subject<'_>) -> String {
    match subject {
        value::Subject::Header(h) => Excerpt(h).to_string(),
        value::Subject::Num(Num::Int(n)) | value::Subject::Json(JsonRef::Num(Num::Int(n))) => {
            n.to_string()
        }
        value::Subject::Num(Num::Float(n)) | value::Subject::Json(JsonRef::Num(Num::Float(n))) => {
            n.to_string()
        }
        value::Subject::Json(JsonRef::Null) => "null".to_owned(),
        value::Subject::Json(JsonRef::Bool(b)) => b.to_string(),
        value::Subject::Json(JsonRef::Str(s)) => Excerpt(s).to_string(),
        // JSON text, not a string: quoted only when cut.
        value::Subject::Json(JsonRef::Compound(v)) => {
            let text = v.to_string();
            if text.chars().nth(Excerpt::MAX_CHARS).is_none() {
                text
            } else {
                Excerpt(&text).to_string()
            }
        }
    }
}
