//! Why bytes do not decode.

use core::fmt;

/// Why bytes are not a valid encoded message or outcome. Most variants carry
/// the byte offset where decoding stopped (`Version` and `TooManyEdits` say
/// what was found instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes end before a field does.
    Truncated {
        /// Where the missing field starts.
        at: usize,
    },
    /// Bytes are left over after the last field.
    TrailingBytes {
        /// Where the extra bytes start.
        at: usize,
    },
    /// A string field is not UTF-8.
    NotUtf8 {
        /// Where the string starts.
        at: usize,
    },
    /// A tag byte names no known variant.
    UnknownTag {
        /// Where the tag is.
        at: usize,
        /// The tag.
        tag: u8,
    },
    /// An answer announces more edits than [`MAX_EDITS`](crate::MAX_EDITS)
    /// (refused before any is read).
    TooManyEdits {
        /// The number announced.
        count: u32,
    },
    /// A message encoded for another ABI version.
    Version {
        /// The version found.
        found: u8,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { at } => write!(
                f,
                "truncated: a field starting at byte {at} runs past the end"
            ),
            DecodeError::TrailingBytes { at } => {
                write!(f, "unexpected bytes after the end, from byte {at}")
            }
            DecodeError::NotUtf8 { at } => write!(f, "the string at byte {at} is not UTF-8"),
            DecodeError::UnknownTag { at, tag } => write!(f, "unknown tag {tag} at byte {at}"),
            DecodeError::TooManyEdits { count } => write!(
                f,
                "it announces {count} edits, more than the {} an answer may hold",
                crate::MAX_EDITS
            ),
            DecodeError::Version { found } => {
                write!(
                    f,
                    "encoded for ABI version {found}, this side speaks version {}",
                    crate::ABI_VERSION
                )
            }
        }
    }
}

impl core::error::Error for DecodeError {}
