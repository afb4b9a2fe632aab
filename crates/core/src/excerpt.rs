//! Texts from messages quoted in texts for people (why a module was not
//! selected, say): at most [`Excerpt::MAX_CHARS`] of them, so that an answer
//! quoting one per module stays small whatever the message holds.

use std::fmt;

/// `text` quoted as Rust's `{:?}` quotes it, cut after
/// [`Excerpt::MAX_CHARS`] characters with `…` and the whole length in bytes.
///
/// ```
/// use rustmq_etl_core::Excerpt;
///
/// assert_eq!(Excerpt("iot.a").to_string(), r#""iot.a""#);
/// let long = "x".repeat(1000);
/// assert_eq!(
///     Excerpt(&long).to_string(),
///     format!("{:?}… (1000 bytes)", "x".repeat(Excerpt::MAX_CHARS))
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Excerpt<'a>(pub &'a str);

impl Excerpt<'_> {
    /// The most characters quoted.
    pub const MAX_CHARS: usize = 100;
}

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(Self::MAX_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}
