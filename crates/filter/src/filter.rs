//! One topic filter, checked when it is made.

use std::fmt;

use crate::glob::{Glob, GlobError};

/// How a filter's pattern is matched against a topic (selection.md, "Topic filters").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterKind {
    /// The topic equals the pattern.
    Exact,
    /// The topic starts with the pattern.
    Prefix,
    /// The topic ends with the pattern.
    Suffix,
    /// The pattern occurs in the topic.
    Contains,
    /// The whole topic matches the wildcard pattern (see [`Glob`]).
    Wildcard,
    /// The regex (Rust `regex` syntax) finds a match anywhere in the topic.
    Regex,
}

impl fmt::Display for FilterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A topic filter whose pattern is known to be valid for its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    kind: FilterKind,
    pattern: String,
    case_sensitive: bool,
    negate: bool,
}

/// Why a pattern is not valid for its filter kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A `Regex` pattern that does not parse.
    #[error("invalid regex {pattern:?}: {message}")]
    Regex {
        /// The pattern as written.
        pattern: String,
        /// The regex parser's explanation.
        message: String,
    },
    /// A `Wildcard` pattern with a bad escape.
    #[error("invalid wildcard {pattern:?}: {message}")]
    Glob {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Filter {
    /// Checks `pattern` for `kind` and makes the filter.
    pub fn new(
        kind: FilterKind,
        pattern: impl Into<String>,
        case_sensitive: bool,
        negate: bool,
    ) -> Result<Filter, FilterError> {
        let pattern = pattern.into();
        match kind {
            FilterKind::Regex => {
                let source = regex_source(&pattern, case_sensitive);
                if let Err(e) = regex_syntax::Parser::new().parse(&source) {
                    return Err(FilterError::Regex {
                        message: first_line_of_regex_error(&e.to_string()),
                        pattern,
                    });
                }
            }
            FilterKind::Wildcard => {
                if let Err(e) = Glob::parse(&pattern) {
                    return Err(glob_error(pattern, e));
                }
            }
            _ => {}
        }
        Ok(Filter {
            kind,
            pattern,
            case_sensitive,
            negate,
        })
    }

    /// How the pattern is matched.
    pub fn kind(&self) -> FilterKind {
        self.kind
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether letters must match in case.
    pub fn case_sensitive(&self) -> bool {
        self.case_sensitive
    }

    /// Whether the filter accepts the topics its pattern does *not* match.
    pub fn negate(&self) -> bool {
        self.negate
    }

    /// The parsed wildcard of a `Wildcard` filter.
    pub(crate) fn glob(&self) -> Glob {
        Glob::parse(&self.pattern).expect("wildcard checked in Filter::new")
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind, self.pattern)?;
        if !self.case_sensitive {
            f.write_str(" (case-insensitive)")?;
        }
        if self.negate {
            f.write_str(" (negated)")?;
        }
        Ok(())
    }
}

/// The regex a `Regex` filter compiles: `(?i)` in front when case-insensitive.
pub(crate) fn regex_source(pattern: &str, case_sensitive: bool) -> String {
    if case_sensitive {
        pattern.to_owned()
    } else {
        format!("(?i){pattern}")
    }
}

fn glob_error(pattern: String, e: GlobError) -> FilterError {
    FilterError::Glob {
        pattern,
        message: e.to_string(),
    }
}

/// regex-syntax errors draw the pattern with a caret over several lines; keep
/// only the explanation (the error names the pattern), so that a report stays
/// one line. A message without an `error:` line is joined into one.
fn first_line_of_regex_error(message: &str) -> String {
    let explanation = message
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .map(|l| l.trim_start_matches("error:").trim());
    match explanation {
        Some(e) => e.to_owned(),
        None => message.lines().collect::<Vec<_>>().join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_patterns_are_rejected_with_the_reason() {
        let err = Filter::new(FilterKind::Regex, "(a", true, false).unwrap_err();
        assert_eq!(err.to_string(), "invalid regex \"(a\": unclosed group");
        let err = Filter::new(FilterKind::Wildcard, r"a\b", true, false).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("invalid wildcard \"a\\\\b\": unknown escape"));
        // Patterns of the other kinds are plain text, brackets included.
        assert!(Filter::new(FilterKind::Exact, "(a", true, false).is_ok());
        assert!(Filter::new(FilterKind::Contains, r"\", false, true).is_ok());
    }

    #[test]
    fn displays_kind_pattern_and_flags() {
        let f = Filter::new(FilterKind::Prefix, "logs.", false, true).unwrap();
        assert_eq!(
            f.to_string(),
            "Prefix \"logs.\" (case-insensitive) (negated)"
        );
    }
}
