//! The wildcard syntax of `Wildcard` filters.
//!
//! The whole topic must match: `*` is any run of characters (empty too, `.`
//! included), `?` exactly one character, `\*` `\?` `\\` the literal characters; every
//! other character is literal. A backslash before any other character, or at the
//! end, is an error.

use std::fmt;

/// One element of a parsed wildcard pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobToken {
    /// A literal character.
    Literal(char),
    /// `*`: any run of characters.
    Star,
    /// `?`: exactly one character.
    Question,
}

/// A parsed wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<GlobToken>,
}

/// Why a wildcard pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError {
    /// The character offset of the offending backslash.
    pub offset: usize,
    /// The character after the backslash, if any.
    pub escaped: Option<char>,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.escaped {
            Some(c) => write!(
                f,
                "unknown escape `\\{c}` at character {} (only `\\*`, `\\?` and `\\\\` are escapes)",
                self.offset
            ),
            None => write!(
                f,
                "dangling `\\` at the end of the pattern (write `\\\\` for a literal backslash)"
            ),
        }
    }
}

impl Glob {
    /// Parses a wildcard pattern.
    pub fn parse(pattern: &str) -> Result<Glob, GlobError> {
        let mut tokens = Vec::with_capacity(pattern.len());
        let mut chars = pattern.chars().enumerate();
        while let Some((offset, c)) = chars.next() {
            tokens.push(match c {
                '*' => GlobToken::Star,
                '?' => GlobToken::Question,
                '\\' => match chars.next() {
                    Some((_, e @ ('*' | '?' | '\\'))) => GlobToken::Literal(e),
                    other => {
                        return Err(GlobError {
                            offset,
                            escaped: other.map(|(_, e)| e),
                        })
                    }
                },
                c => GlobToken::Literal(c),
            });
        }
        Ok(Glob { tokens })
    }

    /// The pattern's elements in order.
    pub fn tokens(&self) -> &[GlobToken] {
        &self.tokens
    }

    /// The same pattern with every literal folded by [`crate::simple_fold`].
    pub(crate) fn folded(&self) -> Glob {
        Glob {
            tokens: self
                .tokens
                .iter()
                .map(|t| match *t {
                    GlobToken::Literal(c) => GlobToken::Literal(crate::simple_fold(c)),
                    other => other,
                })
                .collect(),
        }
    }

    /// An anchored regex (Rust `regex` syntax) equivalent to this pattern.
    pub(crate) fn to_regex(&self) -> String {
        let mut re = String::from("^");
        let mut literal = [0u8; 4];
        for token in &self.tokens {
            match *token {
                GlobToken::Star => re.push_str("(?s:.*)"),
                GlobToken::Question => re.push_str("(?s:.)"),
                GlobToken::Literal(c) => {
                    re.push_str(&regex_syntax::escape(c.encode_utf8(&mut literal)))
                }
            }
        }
        re.push('$');
        re
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GlobToken::*;

    #[test]
    fn parses_escapes_and_rejects_unknown_ones() {
        assert_eq!(
            Glob::parse(r"a*\*?\\").unwrap().tokens(),
            [Literal('a'), Star, Literal('*'), Question, Literal('\\')]
        );
        let err = Glob::parse(r"ab\c").unwrap_err();
        assert_eq!((err.offset, err.escaped), (2, Some('c')));
        assert!(err.to_string().contains("unknown escape"));
        let err = Glob::parse(r"ab\").unwrap_err();
        assert_eq!(err.escaped, None);
        assert!(err.to_string().contains("dangling"));
    }

    #[test]
    fn translates_to_an_anchored_regex() {
        let re = Glob::parse(r"logs.*.a?\*").unwrap().to_regex();
        assert_eq!(re, r"^logs\.(?s:.*)\.a(?s:.)\*$");
    }
}
