//! Round trips of every message and outcome, and arbitrary bytes decoded without
//! a panic.

use proptest::prelude::*;
use rustmq_etl_abi::*;

type Owned = (
    String,
    Option<Vec<u8>>,
    Vec<(String, String)>,
    Vec<u8>,
    Option<i64>,
);

fn message() -> impl Strategy<Value = Owned> {
    (
        ".{0,12}",
        prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
        prop::collection::vec((".{0,4}", ".{0,4}"), 0..4),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::option::of(any::<i64>()),
    )
}

#[derive(Debug, Clone)]
enum OwnedEdit {
    Payload(Vec<u8>),
    Key(Vec<u8>),
    ClearKey,
    Topic(String),
    Header(String, String),
    Remove(String),
    Timestamp(i64),
    ClearTimestamp,
}

fn edit() -> impl Strategy<Value = OwnedEdit> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..16).prop_map(OwnedEdit::Payload),
        prop::collection::vec(any::<u8>(), 0..4).prop_map(OwnedEdit::Key),
        Just(OwnedEdit::ClearKey),
        ".{0,6}".prop_map(OwnedEdit::Topic),
        (".{0,4}", ".{0,4}").prop_map(|(n, v)| OwnedEdit::Header(n, v)),
        ".{0,4}".prop_map(OwnedEdit::Remove),
        any::<i64>().prop_map(OwnedEdit::Timestamp),
        Just(OwnedEdit::ClearTimestamp),
    ]
}

fn borrow(e: &OwnedEdit) -> Edit<'_> {
    match e {
        OwnedEdit::Payload(b) => Edit::SetPayload(b),
        OwnedEdit::Key(b) => Edit::SetKey(b),
        OwnedEdit::ClearKey => Edit::ClearKey,
        OwnedEdit::Topic(t) => Edit::SetTopic(t),
        OwnedEdit::Header(n, v) => Edit::SetHeader(n, v),
        OwnedEdit::Remove(n) => Edit::RemoveHeader(n),
        OwnedEdit::Timestamp(ms) => Edit::SetTimestamp(*ms),
        OwnedEdit::ClearTimestamp => Edit::ClearTimestamp,
    }
}

proptest! {
    #[test]
    fn messages_round_trip((topic, key, headers, payload, ts) in message()) {
        let mut bytes = Vec::new();
        encode_message(
            MessageParts {
                topic: &topic,
                key: key.as_deref(),
                headers: headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                payload: &payload,
                timestamp_ms: ts,
            },
            &mut bytes,
        );
        let view = decode_message(&bytes).unwrap();
        prop_assert_eq!(view.check(), Ok(()));
        prop_assert_eq!(view.topic(), topic.as_str());
        prop_assert_eq!(view.key(), key.as_deref());
        prop_assert_eq!(view.payload(), &payload[..]);
        prop_assert_eq!(view.timestamp_ms(), ts);
        let decoded: Vec<(&str, &str)> = view.headers().collect();
        let expected: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        prop_assert_eq!(decoded, expected);
        // Every proper prefix is truncated, never a panic or a success.
        for cut in 0..bytes.len() {
            prop_assert!(decode_message(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn outcomes_round_trip(edits in prop::collection::vec(edit(), 0..6), which in 0u8..4, text in ".{0,8}") {
        let borrowed: Vec<Edit<'_>> = edits.iter().map(borrow).collect();
        let outcome = match which {
            0 => Outcome::Unchanged,
            1 => Outcome::Drop,
            2 => Outcome::Edits(&borrowed),
            _ => Outcome::Error(&text),
        };
        let mut bytes = Vec::new();
        encode_outcome(&outcome, &mut bytes);
        let back = match decode_outcome(&bytes).unwrap() {
            OutcomeView::Unchanged => Outcome::Unchanged,
            OutcomeView::Drop => Outcome::Drop,
            OutcomeView::Error(e) => Outcome::Error(e),
            OutcomeView::Edits(iter) => {
                let got: Vec<Edit<'_>> = iter.collect();
                prop_assert_eq!(&got, &borrowed);
                Outcome::Edits(&borrowed)
            }
        };
        prop_assert_eq!(back, outcome);
        let mut longer = bytes.clone();
        longer.push(0);
        let trailing = matches!(decode_outcome(&longer), Err(DecodeError::TrailingBytes { .. }));
        prop_assert!(trailing);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        // Decoding never panics; once the strings are checked, neither does
        // reading them.
        if let Ok(view) = decode_message(&bytes) {
            let _ = (view.key(), view.payload(), view.timestamp_ms());
            // Reading every string panics exactly when the check fails.
            let read = std::panic::catch_unwind(|| {
                (view.topic(), view.headers().count(), view.header("a"))
            });
            prop_assert_eq!(read.is_ok(), view.check().is_ok());
        }
        if let Ok(OutcomeView::Edits(iter)) = decode_outcome(&bytes) {
            let _ = iter.count();
        }
    }
}

#[test]
fn hostile_lengths_are_rejected_without_allocating() {
    // An edit count of 2^32 - 1 with no edits behind it: refused by the
    // count, before any edit is read; one within the limit, by the bytes.
    let bytes = [2, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(
        decode_outcome(&bytes).unwrap_err(),
        DecodeError::TooManyEdits { count: u32::MAX }
    );
    let bytes = [&[2][..], &(rustmq_etl_abi::MAX_EDITS as u32).to_le_bytes()].concat();
    assert_eq!(
        decode_outcome(&bytes).unwrap_err(),
        DecodeError::Truncated { at: 5 }
    );
    // A payload length far past the end.
    let bytes = [3, 0xff, 0xff, 0xff, 0x7f, b'x'];
    assert_eq!(
        decode_outcome(&bytes).unwrap_err(),
        DecodeError::Truncated { at: 1 }
    );
    // A topic that is not UTF-8; nor a header's name or value, the name of
    // a header to remove, or an error's text.
    for (bytes, at) in [
        (&[2, 1, 0, 0, 0, 4, 1, 0, 0, 0, 0xff][..], 6),
        (
            &[2, 1, 0, 0, 0, 5, 1, 0, 0, 0, 0xff, 1, 0, 0, 0, b'v'][..],
            6,
        ),
        (
            &[2, 1, 0, 0, 0, 5, 1, 0, 0, 0, b'h', 1, 0, 0, 0, 0xff][..],
            11,
        ),
        (&[2, 1, 0, 0, 0, 6, 1, 0, 0, 0, 0xff][..], 6),
        (&[3, 1, 0, 0, 0, 0xff][..], 1),
    ] {
        assert_eq!(
            decode_outcome(bytes).unwrap_err(),
            DecodeError::NotUtf8 { at },
            "{bytes:?}"
        );
    }
    assert_eq!(
        decode_outcome(&[9]).unwrap_err(),
        DecodeError::UnknownTag { at: 0, tag: 9 }
    );
    assert_eq!(
        decode_message(&[2]).unwrap_err(),
        DecodeError::Version { found: 2 }
    );
    assert_eq!(
        decode_message(&[1, 4]).unwrap_err(),
        DecodeError::UnknownTag { at: 1, tag: 4 }
    );
}

/// Header blocks are checked in one pass when all ASCII; a long header (its
/// length prefix has a high byte) or a non-ASCII one takes the string-by-string
/// check, and a header that is not UTF-8 is refused where it starts.
#[test]
fn header_strings_are_checked_wherever_they_are() {
    let long = "x".repeat(200);
    for (name, value) in [("a", long.as_str()), ("é", "ü"), ("a", "b")] {
        let headers = [(name, value)];
        let mut bytes = Vec::new();
        encode_message(
            MessageParts {
                topic: "t",
                key: None,
                headers: headers.iter().copied(),
                payload: b"",
                timestamp_ms: None,
            },
            &mut bytes,
        );
        let view = decode_message(&bytes).unwrap();
        assert_eq!(view.check(), Ok(()));
        assert_eq!(view.header(name), Some(value));
    }
    // version, flags, topic "t", one header "a" = [0xff], empty payload: the
    // structure decodes, the check finds the value where it starts, and only
    // reading that value panics.
    let bytes = [
        1, 0, 1, 0, 0, 0, b't', 1, 0, 0, 0, 1, 0, 0, 0, b'a', 1, 0, 0, 0, 0xff, 0, 0, 0, 0,
    ];
    let view = decode_message(&bytes).unwrap();
    assert_eq!(view.check().unwrap_err(), DecodeError::NotUtf8 { at: 16 });
    assert_eq!(view.topic(), "t");
    assert_eq!(view.header("b"), None, "no value is read: nothing to check");
    let panic = std::panic::catch_unwind(|| view.header("a")).unwrap_err();
    let text = panic.downcast_ref::<String>().unwrap();
    assert!(text.contains("header value that is not UTF-8"), "{text}");
    assert!(std::panic::catch_unwind(|| view.headers().count()).is_err());
}

/// A topic that is not UTF-8 is found by the check (at its length prefix,
/// after the timestamp when there is one), and reading it panics.
#[test]
fn a_topic_that_is_not_utf8_is_found_by_the_check() {
    for (flags, timestamp, at) in [(0u8, &[][..], 2), (2, &[0u8; 8][..], 10)] {
        let mut bytes = vec![1, flags];
        bytes.extend_from_slice(timestamp);
        bytes.extend_from_slice(&[1, 0, 0, 0, 0xc3, 0, 0, 0, 0, 0, 0, 0, 0]);
        let view = decode_message(&bytes).unwrap();
        assert_eq!(view.check().unwrap_err(), DecodeError::NotUtf8 { at });
        assert_eq!(view.payload(), b"");
        assert!(std::panic::catch_unwind(|| view.topic()).is_err());
    }
}

#[test]
fn the_fixed_encodings_are_what_encode_outcome_writes() {
    for (outcome, fixed) in [
        (Outcome::Unchanged, ENCODED_UNCHANGED),
        (Outcome::Drop, ENCODED_DROP),
    ] {
        let mut bytes = Vec::new();
        encode_outcome(&outcome, &mut bytes);
        assert_eq!(bytes, fixed);
    }
}
