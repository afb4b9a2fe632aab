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

use crate::reader::{is_ascii, utf8, Reader, Writer};
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

/// A decoded message borrowing the encoded bytes.
///
/// [`decode_message`] checks the structure: every length fits, nothing is left
/// over. Whether the topic and the header strings are UTF-8 is checked when
/// they are read (or all at once by [`MessageView::check`]), so that a guest
/// pays only for the fields it reads. The host encodes them from Rust strings:
/// reading one that is not UTF-8 is a broken host, and panics (in a guest: the
/// call traps, and the host reports it).
#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    topic: &'a [u8],
    key: Option<&'a [u8]>,
    /// The header block, and where it starts in the message.
    headers: &'a [u8],
    headers_at: usize,
    header_count: u32,
    payload: &'a [u8],
    timestamp_ms: Option<i64>,
}

/// Decodes an encoded message, checking its structure (the strings are
/// checked when read, see [`MessageView`]).
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
    let topic = r.bytes()?;
    let key = if flags & HAS_KEY != 0 {
        Some(r.bytes()?)
    } else {
        None
    };
    let header_count = r.u32()?;
    let headers_at = r.position();
    for _ in 0..header_count {
        r.bytes()?;
        r.bytes()?;
    }
    let headers = &bytes[headers_at..r.position()];
    let payload = r.bytes()?;
    r.end()?;
    Ok(MessageView {
        topic,
        key,
        headers,
        headers_at,
        header_count,
        payload,
        timestamp_ms,
    })
}

/// Reading a string the host did not encode from a Rust string.
#[cold]
#[inline(never)]
fn not_utf8(what: &str) -> ! {
    panic!("the host sent a {what} that is not UTF-8 (a broken host: it encodes Rust strings)")
}

impl<'a> MessageView<'a> {
    /// Checks that the topic and every header name and value are UTF-8, the
    /// one thing [`decode_message`] leaves to the reading: once this returns
    /// `Ok`, no accessor panics.
    pub fn check(&self) -> Result<(), DecodeError> {
        let topic_at = if self.timestamp_ms.is_some() { 10 } else { 2 };
        if utf8(self.topic).is_none() {
            return Err(DecodeError::NotUtf8 { at: topic_at });
        }
        // When the whole block, length prefixes included, is ASCII, so is
        // every name and value in it: one pass instead of one per string.
        if !is_ascii(self.headers) {
            let mut strings = Reader::new(self.headers);
            for _ in 0..self.header_count {
                for _ in 0..2 {
                    let at = self.headers_at + strings.position();
                    strings.str().map_err(|_| DecodeError::NotUtf8 { at })?;
                }
            }
        }
        Ok(())
    }

    /// The topic (checked on every call: keep it rather than ask again).
    ///
    /// # Panics
    ///
    /// If the topic is not UTF-8, which no host sends (see [`MessageView`]).
    #[inline]
    pub fn topic(&self) -> &'a str {
        utf8(self.topic).unwrap_or_else(|| not_utf8("topic"))
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
    ///
    /// # Panics
    ///
    /// When it reaches a header that is not UTF-8, which no host sends (see
    /// [`MessageView`]).
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            raw: RawHeaders::new(self),
        }
    }

    /// The value of the last header called `name`. Only that value's bytes
    /// are checked: the names are compared as bytes with `name`.
    ///
    /// # Panics
    ///
    /// If that value is not UTF-8, which no host sends (see [`MessageView`]).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        RawHeaders::new(self)
            .filter(|(n, _)| *n == name.as_bytes())
            .last()
            .map(|(_, value)| utf8(value).unwrap_or_else(|| not_utf8("header value")))
    }
}

/// The header block's names and values as bytes.
#[derive(Clone)]
struct RawHeaders<'a> {
    reader: Reader<'a>,
    left: u32,
}

impl<'a> RawHeaders<'a> {
    fn new(view: &MessageView<'a>) -> Self {
        RawHeaders {
            reader: Reader::new(view.headers),
            left: view.header_count,
        }
    }
}

impl<'a> Iterator for RawHeaders<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // `decode_message` checked the block's structure: these cannot fail.
        Some((self.reader.bytes().ok()?, self.reader.bytes().ok()?))
    }
}

/// The headers of a [`MessageView`], in order.
#[derive(Clone)]
pub struct HeaderIter<'a> {
    raw: RawHeaders<'a>,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, value) = self.raw.next()?;
        Some((
            utf8(name).unwrap_or_else(|| not_utf8("header name")),
            utf8(value).unwrap_or_else(|| not_utf8("header value")),
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.raw.left as usize, Some(self.raw.left as usize))
    }
}

impl ExactSizeIterator for HeaderIter<'_> {}
