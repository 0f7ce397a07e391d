//! Fuzz target: `decode` never panics, and whatever it accepts re-encodes to a record that
//! decodes to the same value in both encodings.
//!
//! Run: `cd schema/fuzz && cargo +nightly fuzz run decode -- -max_total_time=600`
#![no_main]

use libfuzzer_sys::fuzz_target;
use xclog_schema::{Encoding, Limits, decode, encode, headers};

const CONTENT_TYPES: [&[u8]; 3] = [
    b"application/json",
    b"application/x-protobuf",
    b"text/plain",
];
const KINDS: [&[u8]; 3] = [b"event", b"snapshot", b"other"];

fuzz_target!(|data: &[u8]| {
    // The first byte picks which headers accompany the rest of the input.
    let (selector, value) = match data.split_first() {
        Some((s, rest)) => (*s, rest),
        None => (0, data),
    };
    let mut hs: Vec<(&str, &[u8])> = Vec::new();
    if selector & 0b11 != 0 {
        hs.push((
            headers::CONTENT_TYPE,
            CONTENT_TYPES[usize::from(selector & 0b11) - 1],
        ));
    }
    if (selector >> 2) & 0b11 != 0 {
        hs.push((
            headers::KIND,
            KINDS[usize::from((selector >> 2) & 0b11) - 1],
        ));
    }
    if selector & 0b1_0000 != 0 {
        hs.push((headers::SCHEMA_VERSION, b"1"));
    }
    let limits = if selector & 0b10_0000 != 0 {
        Limits {
            max_depth: 6,
            max_string_bytes: 32,
            max_array_len: 4,
            ..Limits::default()
        }
    } else {
        Limits::default()
    };
    if let Ok(decoded) = decode(&hs, None, value, &limits) {
        for encoding in [Encoding::Protobuf, Encoding::Json] {
            let again = encode(&decoded.record, encoding);
            let back = decode(
                &[],
                Some(again.key.as_bytes()),
                &again.value,
                &Limits::default(),
            )
            .expect("a record xclog accepted must decode after re-encoding");
            assert_eq!(
                back.record, decoded.record,
                "round trip through {encoding:?}"
            );
        }
    }
});
