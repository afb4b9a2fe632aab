//! The message the host hands to a guest.
//!
//! Layout (little-endian; `bytes` is a `u32` length then that many bytes, `str`
//! the same holding UTF-8):
//!
//! ```text
//! u8 version (= ABI_VERSION)
//! u8 flags: bit 0 key present, bit 1 timestamp present; other bits zero
//! i64 timestamp_ms            (only if bit 1)
//! str topic
//! bytes key                   (only if bit 0)
//! u32 header count, then per header: str name, str value
//! bytes payload
//! ```

use alloc::vec::Vec;

use crate::reader::{is_ascii, Reader, Writer};
use crate::{DecodeError, ABI_VERSION};

const HAS_KEY: u8 = 1;
const HAS_TIMESTAMP: u8 = 2;

/// The parts of a message to encode; `headers` in order, names may repeat.
#[derive(Debug, Clone)]
pub struct MessageParts<'a, H> {
    /// The topic.
    pub topic: &'a str,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The headers, in order.
    pub headers: H,
    /// The payload.
    pub payload: &'a [u8],
    /// Milliseconds since the Unix epoch, if known.
    pub timestamp_ms: Option<i64>,
}

/// Appends the encoding of a message to `out`.
///
/// # Panics
///
/// If a field is 4 GiB or longer (such a message cannot reach a wasm32 guest).
pub fn encode_message<'a, H>(message: MessageParts<'a, H>, out: &mut Vec<u8>)
where
    H: ExactSizeIterator<Item = (&'a str, &'a str)> + Clone,
{
    let start = out.len();
    out.resize(start + encoded_len(&message), 0);
    encode_message_into(message, &mut out[start..]);
}

/// The length of a message's encoding, to size the buffer for
/// [`encode_message_into`].
pub fn encoded_len<'a, H>(message: &MessageParts<'a, H>) -> usize
where
    H: ExactSizeIterator<Item = (&'a str, &'a str)> + Clone,
{
    let field = |bytes: &[u8]| 4 + bytes.len();
    2 + message.timestamp_ms.map_or(0, |_| 8)
        + field(message.topic.as_bytes())
        + message.key.map_or(0, field)
        + 4
        + message
            .headers
            .clone()
            .map(|(name, value)| field(name.as_bytes()) + field(value.as_bytes()))
            .sum::<usize>()
        + field(message.payload)
}

/// Writes the encoding of a message into `out`, which is exactly
/// [`encoded_len`] bytes long: the host encodes straight into a guest's memory
/// with it.
///
/// # Panics
///
/// If `out` is not exactly [`encoded_len`] bytes long, or a field is 4 GiB or
/// longer.
pub fn encode_message_into<'a, H>(message: MessageParts<'a, H>, out: &mut [u8])
where
    H: ExactSizeIterator<Item = (&'a str, &'a str)>,
{
    let mut flags = 0;
    if message.key.is_some() {
        flags |= HAS_KEY;
    }
    if message.timestamp_ms.is_some() {
        flags |= HAS_TIMESTAMP;
    }
    let mut w = Writer::new(out);
    w.put(&[ABI_VERSION, flags]);
    if let Some(ts) = message.timestamp_ms {
        w.put(&ts.to_le_bytes());
    }
    w.field(message.topic.as_bytes());
    if let Some(key) = message.key {
        w.field(key);
    }
    w.u32(u32::try_from(message.headers.len()).expect("fewer than 2^32 headers"));
    for (name, value) in message.headers {
        w.field(name.as_bytes());
        w.field(value.as_bytes());
    }
    w.field(message.payload);
    w.finish();
}

/// A decoded message borrowing the encoded bytes. Every field was checked when it
/// was decoded.
#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    topic: &'a str,
    key: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: u32,
    payload: &'a [u8],
    timestamp_ms: Option<i64>,
}

/// Decodes an encoded message, checking every field.
pub fn decode_message(bytes: &[u8]) -> Result<MessageView<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != ABI_VERSION {
        return Err(DecodeError::Version { found: version });
    }
    let flags_at = r.position();
    let flags = r.u8()?;
    if flags & !(HAS_KEY | HAS_TIMESTAMP) != 0 {
        return Err(DecodeError::UnknownTag {
            at: flags_at,
            tag: flags,
        });
    }
    let timestamp_ms = if flags & HAS_TIMESTAMP != 0 {
        Some(r.i64()?)
    } else {
        None
    };
    let topic = r.str()?;
    let key = if flags & HAS_KEY != 0 {
        Some(r.bytes()?)
    } else {
        None
    };
    let header_count = r.u32()?;
    let headers_start = r.position();
    for _ in 0..header_count {
        r.bytes()?;
        r.bytes()?;
    }
    let headers = &bytes[headers_start..r.position()];
    // When the whole block, length prefixes included, is ASCII, so is every
    // name and value in it: one pass instead of one per string.
    if !is_ascii(headers) {
        let mut strings = Reader::at(bytes, headers_start);
        for _ in 0..header_count {
            strings.str()?;
            strings.str()?;
        }
    }
    let payload = r.bytes()?;
    r.end()?;
    Ok(MessageView {
        topic,
        key,
        headers,
        header_count,
        payload,
        timestamp_ms,
    })
}

impl<'a> MessageView<'a> {
    /// The topic.
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Milliseconds since the Unix epoch, if known.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }

    /// The headers in order (a name may repeat).
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            reader: Reader::new(self.headers),
            left: self.header_count,
        }
    }

    /// The value of the last header called `name`.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers()
            .filter(|(n, _)| *n == name)
            .last()
            .map(|(_, v)| v)
    }
}

/// The headers of a [`MessageView`], in order.
#[derive(Clone)]
pub struct HeaderIter<'a> {
    reader: Reader<'a>,
    left: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The region was checked by `decode_message`: these cannot fail.
        Some((self.reader.str().ok()?, self.reader.str().ok()?))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for HeaderIter<'_> {}
