//! What a guest answers.
//!
//! Layout (little-endian; `bytes` and `str` as in a message):
//!
//! ```text
//! u8 tag: 0 unchanged, 1 drop, 2 edits, 3 error
//! edits: u32 count, then per edit a u8 op and its operands:
//!   1 set payload (bytes)   2 set key (bytes)   3 clear key
//!   4 set topic (str)       5 set header (str name, str value)
//!   6 remove header (str name)
//!   7 set timestamp (i64)   8 clear timestamp
//! error: str message
//! ```

use alloc::vec::Vec;

use crate::reader::{put_bytes, put_u32, Reader};
use crate::DecodeError;

/// One change to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Replace the payload.
    SetPayload(&'a [u8]),
    /// Set the key.
    SetKey(&'a [u8]),
    /// Remove the key.
    ClearKey,
    /// Replace the topic.
    SetTopic(&'a str),
    /// Set a header: every header of that name is replaced by this one.
    SetHeader(&'a str, &'a str),
    /// Remove every header of that name.
    RemoveHeader(&'a str),
    /// Set the timestamp (milliseconds since the Unix epoch).
    SetTimestamp(i64),
    /// Remove the timestamp.
    ClearTimestamp,
}

/// A guest's answer, to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Pass the message on as it came.
    Unchanged,
    /// Drop the message.
    Drop,
    /// Apply these edits in order.
    Edits(&'a [Edit<'a>]),
    /// The module failed on this message.
    Error(&'a str),
}

const UNCHANGED: u8 = 0;
const DROP: u8 = 1;

/// The whole encoding of [`Outcome::Unchanged`]: a guest may answer with it
/// without encoding anything.
pub const ENCODED_UNCHANGED: &[u8] = &[UNCHANGED];
/// The whole encoding of [`Outcome::Drop`].
pub const ENCODED_DROP: &[u8] = &[DROP];
const EDITS: u8 = 2;
const ERROR: u8 = 3;

/// Appends the encoding of an outcome to `out`.
///
/// # Panics
///
/// If a field is 4 GiB or longer.
pub fn encode_outcome(outcome: &Outcome<'_>, out: &mut Vec<u8>) {
    match outcome {
        Outcome::Unchanged => out.push(UNCHANGED),
        Outcome::Drop => out.push(DROP),
        Outcome::Error(message) => {
            out.push(ERROR);
            put_bytes(out, message.as_bytes());
        }
        Outcome::Edits(edits) => encode_edits(edits.iter().copied(), out),
    }
}

/// Appends the encoding of [`Outcome::Edits`] with these edits to `out`,
/// from any iterator (a guest holding its edits in another form need not
/// collect them into a slice first): the count is written once they are.
///
/// # Panics
///
/// If a field is 4 GiB or longer, or there are 2^32 edits or more.
pub fn encode_edits<'a>(edits: impl IntoIterator<Item = Edit<'a>>, out: &mut Vec<u8>) {
    out.push(EDITS);
    let count_at = out.len();
    put_u32(out, 0);
    let mut count = 0u32;
    for edit in edits {
        count = count.checked_add(1).expect("fewer than 2^32 edits");
        match edit {
            Edit::SetPayload(b) => {
                out.push(1);
                put_bytes(out, b);
            }
            Edit::SetKey(b) => {
                out.push(2);
                put_bytes(out, b);
            }
            Edit::ClearKey => out.push(3),
            Edit::SetTopic(t) => {
                out.push(4);
                put_bytes(out, t.as_bytes());
            }
            Edit::SetHeader(n, v) => {
                out.push(5);
                put_bytes(out, n.as_bytes());
                put_bytes(out, v.as_bytes());
            }
            Edit::RemoveHeader(n) => {
                out.push(6);
                put_bytes(out, n.as_bytes());
            }
            Edit::SetTimestamp(ms) => {
                out.push(7);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            Edit::ClearTimestamp => out.push(8),
        }
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
}

/// A decoded outcome borrowing the encoded bytes; every edit was checked.
#[derive(Debug, Clone)]
pub enum OutcomeView<'a> {
    /// Pass the message on as it came.
    Unchanged,
    /// Drop the message.
    Drop,
    /// Apply these edits in order.
    Edits(EditIter<'a>),
    /// The module failed on this message.
    Error(&'a str),
}

/// Decodes an outcome, checking every edit before any is returned.
pub fn decode_outcome(bytes: &[u8]) -> Result<OutcomeView<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    let tag_at = r.position();
    let outcome = match r.u8()? {
        UNCHANGED => OutcomeView::Unchanged,
        DROP => OutcomeView::Drop,
        ERROR => OutcomeView::Error(r.str()?),
        EDITS => {
            let count = r.u32()?;
            // (Checked first: decoding millions of one-byte edits is the
            // host's work, outside the module's time budget.)
            if count as usize > crate::MAX_EDITS {
                return Err(DecodeError::TooManyEdits { count });
            }
            let start = r.position();
            for _ in 0..count {
                read_edit(&mut r)?;
            }
            OutcomeView::Edits(EditIter {
                reader: Reader::new(&bytes[start..r.position()]),
                left: count,
            })
        }
        tag => return Err(DecodeError::UnknownTag { at: tag_at, tag }),
    };
    r.end()?;
    Ok(outcome)
}

fn read_edit<'a>(r: &mut Reader<'a>) -> Result<Edit<'a>, DecodeError> {
    let at = r.position();
    Ok(match r.u8()? {
        1 => Edit::SetPayload(r.bytes()?),
        2 => Edit::SetKey(r.bytes()?),
        3 => Edit::ClearKey,
        4 => Edit::SetTopic(r.str()?),
        5 => Edit::SetHeader(r.str()?, r.str()?),
        6 => Edit::RemoveHeader(r.str()?),
        7 => Edit::SetTimestamp(r.i64()?),
        8 => Edit::ClearTimestamp,
        tag => return Err(DecodeError::UnknownTag { at, tag }),
    })
}

/// The edits of an [`OutcomeView`], in order.
#[derive(Debug, Clone)]
pub struct EditIter<'a> {
    reader: Reader<'a>,
    left: u32,
}

impl<'a> Iterator for EditIter<'a> {
    type Item = Edit<'a>;

    fn next(&mut self) -> Option<Edit<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The region was checked by `decode_outcome`: this cannot fail.
        read_edit(&mut self.reader).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Every edit left was checked by `decode_outcome`, so each one reads.
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for EditIter<'_> {}
