//! Ordered message headers in which a name may repeat.

use std::collections::HashMap;

/// Up to this many edits, [`Headers::apply`] (and
/// [`Message::apply`](crate::Message::apply)) applies them one by one: faster
/// than building an index for a handful.
pub(crate) const FEW_EDITS: usize = 8;

/// One change to a message's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderEdit<'a> {
    /// Every header of this name is replaced by one with this value, at the
    /// position of the first (appended if there was none).
    Set(&'a str, &'a str),
    /// Every header of this name is removed.
    Remove(&'a str),
}

/// Ordered `name → value` headers. A name may occur more than once; lookups
/// return the last occurrence ("the last one wins").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Appends a header, keeping any earlier header of the same name.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// The value of the last header called `name` (names compare case-sensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` to `value`: replaces every header of that name by one at the
    /// position of the first, or appends it if there was none. A `String`
    /// given is kept, not copied.
    pub fn set(&mut self, name: impl AsRef<str> + Into<String>, value: impl Into<String>) {
        let value = value.into();
        let position = self.0.iter().position(|(n, _)| n == name.as_ref());
        match position {
            Some(first) => {
                self.0[first].1 = value;
                let mut index = 0;
                let name = name.as_ref();
                self.0.retain(|(n, _)| {
                    index += 1;
                    index - 1 == first || n != name
                });
            }
            None => self.0.push((name.into(), value)),
        }
    }

    /// Applies `edits` in order, as [`Headers::set`] and [`Headers::remove`]
    /// would one by one, in time linear in the headers and the edits (one by
    /// one, each edit scans every header: quadratic for a long list of edits,
    /// such as an untrusted module may answer).
    pub fn apply<'a>(&mut self, edits: impl IntoIterator<Item = HeaderEdit<'a>>) {
        let edits = edits.into_iter();
        if edits.size_hint().1.is_some_and(|n| n <= FEW_EDITS) {
            for edit in edits {
                match edit {
                    HeaderEdit::Set(name, value) => self.set(name, value),
                    HeaderEdit::Remove(name) => {
                        self.remove(name);
                    }
                }
            }
            return;
        }
        // Every header is a slot; an edit empties slots or adds one, and each
        // slot is emptied at most once.
        let mut slots: Vec<Option<(String, String)>> =
            std::mem::take(&mut self.0).into_iter().map(Some).collect();
        let mut positions: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, slot) in slots.iter().enumerate() {
            if let Some((name, _)) = slot {
                positions.entry(name.clone()).or_default().push(i);
            }
        }
        for edit in edits {
            match edit {
                HeaderEdit::Set(name, value) => match positions.get_mut(name) {
                    Some(at) if !at.is_empty() => {
                        if let Some((_, v)) = &mut slots[at[0]] {
                            value.clone_into(v);
                        }
                        for &later in &at[1..] {
                            slots[later] = None;
                        }
                        at.truncate(1);
                    }
                    _ => {
                        positions.insert(name.to_owned(), vec![slots.len()]);
                        slots.push(Some((name.to_owned(), value.to_owned())));
                    }
                },
                HeaderEdit::Remove(name) => {
                    for at in positions
                        .get_mut(name)
                        .into_iter()
                        .flat_map(|at| at.drain(..))
                    {
                        slots[at] = None;
                    }
                }
            }
        }
        self.0 = slots.into_iter().flatten().collect();
    }

    /// Removes every header called `name`; returns whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(n, _)| n != name);
        self.0.len() != before
    }

    /// Keeps the first `len` headers and removes the rest (nothing if there
    /// are `len` or fewer).
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }

    /// The headers in order.
    pub fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&str, &str)> + ExactSizeIterator + Clone {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The number of headers, repeated names counted each time.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of every header name and value.
    pub fn byte_len(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.len()).sum()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn edit_strategy() -> impl Strategy<Value = (bool, u8, u8)> {
        (any::<bool>(), 0u8..6, 0u8..4)
    }

    proptest! {
        /// The batch application gives exactly what one edit at a time gives,
        /// for short and long lists (both paths).
        #[test]
        fn apply_agrees_with_one_edit_at_a_time(
            start in proptest::collection::vec((0u8..6, 0u8..4), 0..12),
            edits in proptest::collection::vec(edit_strategy(), 0..40),
        ) {
            let headers: Headers = start.iter().map(|(n, v)| (format!("h{n}"), format!("v{v}"))).collect();
            let names: Vec<String> = edits.iter().map(|(_, n, _)| format!("h{n}")).collect();
            let values: Vec<String> = edits.iter().map(|(_, _, v)| format!("w{v}")).collect();
            let batch: Vec<HeaderEdit> = edits
                .iter()
                .enumerate()
                .map(|(i, (set, _, _))| if *set {
                    HeaderEdit::Set(&names[i], &values[i])
                } else {
                    HeaderEdit::Remove(&names[i])
                })
                .collect();
            let mut expected = headers.clone();
            for edit in &batch {
                match *edit {
                    HeaderEdit::Set(n, v) => expected.set(n, v),
                    HeaderEdit::Remove(n) => { expected.remove(n); }
                }
            }
            let mut got = headers.clone();
            got.apply(batch.iter().copied());
            prop_assert_eq!(&got, &expected);
            // Through an iterator that does not know its length: the index path.
            let mut got = headers;
            got.apply(batch.iter().copied().filter(|_| true));
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn last_header_of_a_name_wins() {
        let headers: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(headers.get("a"), Some("3"));
        assert_eq!(headers.get("A"), None);
        assert_eq!(headers.byte_len(), 6);
    }

    #[test]
    fn set_replaces_every_occurrence_at_the_first_position() {
        let mut headers: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        headers.set("a", "9");
        assert_eq!(headers.iter().collect::<Vec<_>>(), [("a", "9"), ("b", "2")]);
        headers.set("c", "4");
        assert_eq!(headers.get("c"), Some("4"));
        assert!(headers.remove("a"));
        assert!(!headers.remove("a"));
        assert_eq!(headers.len(), 2);
    }
}
