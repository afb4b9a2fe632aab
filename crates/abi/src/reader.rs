//! A bounds-checked cursor over bytes, and the writing helpers.

use alloc::vec::Vec;

use crate::DecodeError;

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

    pub(crate) fn position(&self) -> usize {
        self.at
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.at == self.bytes.len()
    }

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

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    /// A `u32` length, then that many bytes.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.at;
        let len = self.u32()? as usize;
        self.take(len).map_err(|_| DecodeError::Truncated { at })
    }

    /// A `u32` length, then that many bytes of UTF-8.
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.at;
        core::str::from_utf8(self.bytes()?).map_err(|_| DecodeError::NotUtf8 { at })
    }

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
