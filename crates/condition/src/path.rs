//! The JSONPath subset of `PayloadField` rules.
//!
//! `$` is the root; `.name`, `['name']` and `["name"]` select an object member;
//! `[N]` selects an array element; segments chain (`$.a.b[0]['c d']`). A path that
//! does not start with `$` is read as if `$.` preceded it. Inside quotes a
//! backslash takes the next character literally.

use std::fmt;

/// One step of a [`JsonPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// An object member.
    Field(String),
    /// An array element.
    Index(usize),
}

/// A parsed payload field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonPath {
    segments: Vec<PathSegment>,
}

/// Why a field path does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field path {path:?}: {message}")]
pub struct PathError {
    path: String,
    message: String,
}

impl JsonPath {
    /// Parses a field path.
    pub fn parse(path: &str) -> Result<JsonPath, PathError> {
        let error = |message: String| PathError {
            path: path.to_owned(),
            message,
        };
        let rooted;
        let text = if path.starts_with('$') {
            path
        } else {
            rooted = format!("$.{path}");
            &rooted
        };
        let chars: Vec<char> = text.chars().collect();
        let mut segments = Vec::new();
        let mut i = 1;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    let start = i + 1;
                    let mut end = start;
                    while end < chars.len() && !matches!(chars[end], '.' | '[' | ']') {
                        end += 1;
                    }
                    if end == start {
                        return Err(error(format!(
                            "empty member name after `.` at character {i}"
                        )));
                    }
                    segments.push(PathSegment::Field(chars[start..end].iter().collect()));
                    i = end;
                }
                '[' => {
                    let (segment, next) = bracket(&chars, i).map_err(error)?;
                    segments.push(segment);
                    i = next;
                }
                c => {
                    return Err(error(format!(
                        "expected `.` or `[` at character {i}, found `{c}`"
                    )))
                }
            }
        }
        Ok(JsonPath { segments })
    }

    /// The steps from the root.
    pub fn segments(&self) -> &[PathSegment] {
        &self.segments
    }
}

/// Parses `[...]` starting at `open`; returns the segment and the index after `]`.
fn bracket(chars: &[char], open: usize) -> Result<(PathSegment, usize), String> {
    let mut i = open + 1;
    match chars.get(i) {
        Some(&quote @ ('\'' | '"')) => {
            i += 1;
            let mut name = String::new();
            loop {
                match chars.get(i) {
                    None => {
                        return Err(format!("unclosed {quote} opened at character {}", open + 1))
                    }
                    Some('\\') => {
                        let escaped = chars
                            .get(i + 1)
                            .ok_or_else(|| "dangling `\\` in a quoted name".to_owned())?;
                        name.push(*escaped);
                        i += 2;
                    }
                    Some(&c) if c == quote => break,
                    Some(&c) => {
                        name.push(c);
                        i += 1;
                    }
                }
            }
            if chars.get(i + 1) != Some(&']') {
                return Err(format!("expected `]` at character {}", i + 1));
            }
            Ok((PathSegment::Field(name), i + 2))
        }
        _ => {
            let start = i;
            while chars.get(i).is_some_and(char::is_ascii_digit) {
                i += 1;
            }
            if chars.get(i) != Some(&']') || i == start {
                return Err(format!(
                    "expected an array index (digits) or a quoted name in `[...]` at character {open}"
                ));
            }
            let digits: String = chars[start..i].iter().collect();
            let index = digits
                .parse()
                .map_err(|_| format!("array index {digits} is too large"))?;
            Ok((PathSegment::Index(index), i + 1))
        }
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        for segment in &self.segments {
            match segment {
                PathSegment::Field(name)
                    if !name.is_empty() && !name.contains(['.', '[', ']', '\'', '"', '\\']) =>
                {
                    write!(f, ".{name}")?
                }
                PathSegment::Field(name) => {
                    write!(f, "['{}']", name.replace('\\', "\\\\").replace('\'', "\\'"))?
                }
                PathSegment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathSegment::*;

    fn segments(path: &str) -> Vec<PathSegment> {
        JsonPath::parse(path).unwrap().segments().to_vec()
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(segments("$"), []);
        assert_eq!(segments("$.sensor_type"), [Field("sensor_type".into())]);
        assert_eq!(segments("sensor_type"), [Field("sensor_type".into())]);
        assert_eq!(
            segments(r#"$.a.b[0]['c d']["e'f"]['g\'h']"#),
            [
                Field("a".into()),
                Field("b".into()),
                Index(0),
                Field("c d".into()),
                Field("e'f".into()),
                Field("g'h".into())
            ]
        );
        assert_eq!(
            segments("a[12].b"),
            [Field("a".into()), Index(12), Field("b".into())]
        );
        assert_eq!(segments("$['']"), [Field("".into())]);
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "", "$.", "$..a", "$a", "$[", "$[-1]", "$[x]", "$['a'", "$['a'x]", "a.", "$[ 1]",
        ] {
            let err = JsonPath::parse(bad).expect_err(bad);
            assert!(err.to_string().starts_with("invalid field path"), "{err}");
        }
    }

    #[test]
    fn displays_a_canonical_form_that_parses_back() {
        for path in ["$", "a.b[3]", "$['c d']['x.y']", r#"$["it's"]"#] {
            let parsed = JsonPath::parse(path).unwrap();
            assert_eq!(JsonPath::parse(&parsed.to_string()).unwrap(), parsed);
        }
    }
}
