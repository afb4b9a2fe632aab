//! Ordered message headers in which a name may repeat.

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
    /// position of the first, or appends it if there was none.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter().position(|(n, _)| n == name) {
            Some(first) => {
                self.0[first].1 = value;
                let mut index = 0;
                self.0.retain(|(n, _)| {
                    index += 1;
                    index - 1 == first || n != name
                });
            }
            None => self.0.push((name.to_owned(), value)),
        }
    }

    /// Removes every header called `name`; returns whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(n, _)| n != name);
        self.0.len() != before
    }

    /// The headers in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone {
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
    use super::*;

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
