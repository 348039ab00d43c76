//! Fuzzes the go-plugin handshake parser (`handshake::parse`) and the address rewrite
//! (`handshake::rewrite`, `Handshake::rewrite`) with arbitrary bytes as the line.
//!
//! Checks, beyond "no panic":
//! - an error is one of the parsing variants, with a non-empty message, no partial bytes, and
//!   offsets that point where they say; `rewrite` of the same line fails too;
//! - a parsed line keeps its bytes, has an integer `CORE`, and
//!   - rewriting it to `unix` + `/x/y` re-parses to that address with every other field
//!     (core and app version, protocol, certificate, mux, extra parts) unchanged, and rewriting
//!     the result back to the original address gives the input byte for byte;
//!   - rewriting it with its own network and address is byte-identical to the input (or a
//!     typed `BadReplacement` when those fields could not be written back as they are);
//!   - rewriting with values taken from other fields of the line either round-trips the same
//!     way or is refused with a typed `BadReplacement`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sandbox_runner::handshake::{self, Handshake, HandshakeError};

fuzz_target!(|data: &[u8]| {
    match handshake::parse(data) {
        Ok(hs) => check_parsed(data, &hs),
        Err(e) => {
            check_parse_error(data, &e);
            match handshake::rewrite(data, "unix", "/x/y") {
                Ok(out) => panic!("rewrite accepted a line parse refused ({e}): {out:?}"),
                Err(e2) => assert!(!e2.to_string().is_empty()),
            }
        }
    }
});

/// The error of `parse(data)` is a parsing error that describes `data` correctly.
fn check_parse_error(data: &[u8], e: &HandshakeError) {
    assert!(!e.to_string().is_empty(), "empty message for {e:?}");
    assert!(e.partial().is_empty(), "parse error carries bytes: {e:?}");
    match e {
        HandshakeError::Empty => {}
        HandshakeError::TooFewParts { found } => assert!((1..4).contains(found), "{e:?}"),
        HandshakeError::TooLong { len, max, .. } => {
            assert_eq!(*max, handshake::MAX_HANDSHAKE_LINE);
            assert_eq!(*len, data.len());
            assert!(*len > *max);
        }
        HandshakeError::NotUtf8 { offset } => {
            assert!(*offset < data.len(), "{e:?}");
            assert!(std::str::from_utf8(&data[..*offset]).is_ok(), "{e:?}");
        }
        HandshakeError::EmbeddedNewline { offset } => {
            assert_eq!(data.get(*offset), Some(&b'\n'), "{e:?}");
            assert!(
                *offset + 1 < data.len(),
                "the final newline is not embedded: {e:?}"
            );
        }
        HandshakeError::BadCoreVersion { value } => {
            assert!(value.parse::<i64>().is_err(), "{e:?}");
        }
        HandshakeError::BadReplacement { .. }
        | HandshakeError::Timeout { .. }
        | HandshakeError::Eof { .. }
        | HandshakeError::Io { .. } => panic!("parse returned a non-parsing error: {e:?}"),
    }
}

/// Core, app version, protocol (as used and as written), certificate, mux, extra parts.
type Others<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Vec<&'a str>,
);

/// Everything but `NETWORK` and `ADDR`, which a rewrite must leave alone.
fn others(hs: &Handshake) -> Others<'_> {
    (
        hs.core_version(),
        hs.app_version(),
        hs.protocol(),
        hs.protocol_field(),
        hs.server_cert(),
        hs.mux_field(),
        hs.extra(),
    )
}

/// Whether `value` can replace a field (the rule `rewrite` documents).
fn placeable(value: &str) -> bool {
    !value.is_empty() && !value.contains(['|', '\n', '\r', '\0']) && value.trim() == value
}

fn check_parsed(data: &[u8], hs: &Handshake) {
    assert_eq!(hs.raw(), data);
    assert!(data.len() <= handshake::MAX_HANDSHAKE_LINE);
    assert_eq!(
        hs.core_version().parse::<i64>().ok(),
        Some(hs.core_version_number()),
        "{hs:?}"
    );
    assert_eq!(hs.protocol(), hs.protocol_field().unwrap_or("netrpc"));

    // The sandbox's own rewrite: a unix socket under the host's directory.
    let out = hs
        .rewrite("unix", "/x/y")
        .expect("valid replacement refused");
    assert_eq!(out, handshake::rewrite(data, "unix", "/x/y").unwrap());
    let after = handshake::parse(&out).expect("rewritten line does not parse");
    assert_eq!(after.network(), "unix");
    assert_eq!(after.addr(), "/x/y");
    assert_eq!(others(&after), others(hs));
    if placeable(hs.network()) && placeable(hs.addr()) {
        let back = after.rewrite(hs.network(), hs.addr()).unwrap();
        assert_eq!(back, data, "rewriting back does not restore the line");
    }

    // Same network and address: byte-identical, or refused when they cannot be written back.
    check_rewrite(data, hs, hs.network(), hs.addr(), true);
    // Fuzzer-chosen replacement values, taken from the line's other fields.
    check_rewrite(data, hs, hs.addr(), hs.network(), false);
    check_rewrite(
        data,
        hs,
        hs.app_version(),
        hs.server_cert().unwrap_or(hs.protocol()),
        false,
    );
}

/// `hs.rewrite(network, addr)` puts exactly those values in, or refuses them with a typed error.
fn check_rewrite(data: &[u8], hs: &Handshake, network: &str, addr: &str, same: bool) {
    match hs.rewrite(network, addr) {
        Ok(out) => {
            assert!(
                placeable(network) && placeable(addr),
                "{network:?} {addr:?}"
            );
            if same {
                assert_eq!(out, data, "rewrite with the same values changed the line");
            }
            let after = handshake::parse(&out).expect("rewritten line does not parse");
            assert_eq!(after.network(), network);
            assert_eq!(after.addr(), addr);
            assert_eq!(others(&after), others(hs));
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            match &e {
                HandshakeError::BadReplacement { field, value, why } => {
                    assert!(*field == "network" || *field == "address", "{e:?}");
                    assert!(!why.is_empty());
                    assert!(!placeable(value), "refused a placeable value: {e:?}");
                    assert!(value == network || value == addr, "{e:?}");
                }
                other => panic!("rewrite of a parsed line failed with {other:?}"),
            }
            assert!(!(placeable(network) && placeable(addr)), "{e:?}");
        }
    }
}
