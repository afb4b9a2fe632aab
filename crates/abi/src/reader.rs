//! A bounds-checked cursor over bytes, and the writing helpers.

use alloc::vec::Vec;

use crate::DecodeError;

/// Whether every byte is ASCII: eight bytes per step, the last step overlapping
/// the one before. (Guests run this on every message, and their metering
/// charges each loop round: fewer rounds, less time.)
#[inline]
pub(crate) fn is_ascii(bytes: &[u8]) -> bool {
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let word = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let len = bytes.len();
    let high = if len >= 8 {
        let mut high = word(len - 8);
        let mut at = 0;
        while at + 8 < len {
            high |= word(at);
            at += 8;
        }
        high
    } else {
        bytes.iter().fold(0, |high, &b| high | u64::from(b))
    };
    high & HIGH_BITS == 0
}

/// `core::str::from_utf8` with a fast path for ASCII, which topics and header
/// names and values nearly always are.
#[inline]
pub(crate) fn utf8(bytes: &[u8]) -> Option<&str> {
    if is_ascii(bytes) {
        // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
        Some(unsafe { core::str::from_utf8_unchecked(bytes) })
    } else {
        core::str::from_utf8(bytes).ok()
    }
}

/// Reads little-endian fields, checking every length against what is left.
#[derive(Clone)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl core::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reader").field("at", &self.at).finish()
    }
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    #[inline]
    pub(crate) fn position(&self) -> usize {
        self.at
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.at == self.bytes.len()
    }

    #[inline]
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        match end {
            Some(end) => {
                let slice = &self.bytes[self.at..end];
                self.at = end;
                Ok(slice)
            }
            None => Err(DecodeError::Truncated { at: self.at }),
        }
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    /// A `u32` length, then that many bytes.
    #[inline]
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.at;
        let len = self.u32()? as usize;
        self.take(len).map_err(|_| DecodeError::Truncated { at })
    }

    /// A `u32` length, then that many bytes of UTF-8.
    #[inline]
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.at;
        utf8(self.bytes()?).ok_or(DecodeError::NotUtf8 { at })
    }

    #[inline]
    pub(crate) fn end(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { at: self.at })
        }
    }
}

pub(crate) fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

/// Writes a length-prefixed field. Fields longer than `u32::MAX` bytes cannot be
/// encoded: the caller bounds every field far below that.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("an encoded field is shorter than 4 GiB");
    put_u32(out, len);
    out.extend_from_slice(bytes);
}

/// Writes fields into a slice sized beforehand.
pub(crate) struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    #[inline]
    pub(crate) fn new(out: &'a mut [u8]) -> Self {
        Writer { out, at: 0 }
    }

    #[inline]
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        self.out[self.at..end].copy_from_slice(bytes);
        self.at = end;
    }

    #[inline]
    pub(crate) fn u32(&mut self, n: u32) {
        self.put(&n.to_le_bytes());
    }

    /// A length-prefixed field.
    #[inline]
    pub(crate) fn field(&mut self, bytes: &[u8]) {
        self.u32(u32::try_from(bytes.len()).expect("an encoded field is shorter than 4 GiB"));
        self.put(bytes);
    }

    /// Checks that the slice was filled exactly.
    #[inline]
    pub(crate) fn finish(self) {
        assert_eq!(
            self.at,
            self.out.len(),
            "the buffer was sized for this encoding"
        );
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use proptest::prelude::*;

    use super::{is_ascii, utf8};

    proptest! {
        /// The fast path agrees with `core::str::from_utf8` on any bytes, and on
        /// strings with a non-ASCII character at any place.
        #[test]
        fn utf8_agrees_with_core(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(utf8(&bytes), core::str::from_utf8(&bytes).ok());
            prop_assert_eq!(is_ascii(&bytes), bytes.is_ascii());
        }

        #[test]
        fn utf8_accepts_every_string(text in "[a-z.é\\u{10000}]{0,40}") {
            prop_assert_eq!(utf8(text.as_bytes()), Some(text.as_str()));
        }
    }
}
