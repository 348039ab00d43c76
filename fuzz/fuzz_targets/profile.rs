//! Fuzzes the profile loader (`Profile::from_toml_str`) with arbitrary text, `extends`
//! included: built-in names, and paths resolved from `fuzz/fixtures/` (the process's working
//! directory), whose files extend each other, nest, loop and fail.
//!
//! Checks, beyond "no panic": the result is a profile or a `ProfileError` with a non-empty
//! message; a parse error in the input itself points at a line and column inside it; an
//! `Invalid` error has a message; a `Read` error only comes from an `extends` path; a loaded
//! profile holds at most `MAX_PASS_FDS` fds. Inputs whose `extends` names something other than
//! a small regular file (a device, a FIFO, `/proc`, `/sys`) are skipped: reading those could
//! block or never end, which is the caller's choice of path, not a parser bug.

#![no_main]

use std::path::Path;
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use sandbox_runner::profile::MAX_PASS_FDS;
use sandbox_runner::{Profile, ProfileError};

/// How the input is named in errors.
const ORIGIN: &str = "fuzz.toml";

/// The directory relative `extends` paths are resolved from.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

static CHDIR: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    CHDIR.call_once(|| std::env::set_current_dir(FIXTURES).expect("cd fuzz/fixtures"));
    let text = String::from_utf8_lossy(data);
    if !extends_is_safe(&text) {
        return;
    }
    match Profile::from_toml_str(&text, ORIGIN) {
        Ok(p) => assert!(p.pass_fds.len() <= MAX_PASS_FDS, "{} fds", p.pass_fds.len()),
        Err(e) => check_error(&text, &e),
    }
});

fn check_error(text: &str, e: &ProfileError) {
    let shown = e.to_string();
    assert!(!shown.trim().is_empty(), "empty message for {e:?}");
    match e {
        ProfileError::Parse {
            origin,
            line,
            column,
            message,
        } => {
            assert!(!message.trim().is_empty(), "{e:?}");
            assert!(*line >= 1 && *column >= 1, "{e:?}");
            assert!(shown.starts_with(origin.as_str()), "{shown}");
            if origin == ORIGIN {
                // A position in the input (one past the last line for "unexpected end").
                let lines = text.lines().count().max(1);
                assert!(*line <= lines + 1, "line {line} of {lines}: {e:?}");
                let line_len = text.split('\n').nth(line - 1).map_or(0, str::len);
                assert!(
                    *column <= line_len + 1,
                    "column {column} of {line_len}: {e:?}"
                );
            }
        }
        ProfileError::Invalid { origin, message } => {
            assert!(!message.trim().is_empty(), "{e:?}");
            assert!(shown.starts_with(origin.as_str()), "{shown}");
        }
        // Only an `extends` path is read (the key may be written with escapes, `"\u0065..."`).
        ProfileError::Read { .. } => {
            assert!(text.contains("extends") || text.contains('\\'), "{e:?}")
        }
        ProfileError::UnknownName { .. } => panic!("from_toml_str looked up a name: {e:?}"),
    }
}

/// False when the input's own `extends` is a path to something that is not a small regular
/// file outside `/proc`, `/sys` and `/dev` (the fixtures' own `extends` are known).
fn extends_is_safe(text: &str) -> bool {
    // A key can only be spelled without the word `extends` through escapes in a quoted key.
    if !text.contains("extends") && !text.contains('\\') {
        return true;
    }
    // Unparsable TOML fails in the loader before any file is opened.
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return true;
    };
    let Some(toml::Value::String(spec)) = table.get("extends") else {
        return true;
    };
    // The loader's own rule: a path when it has a `/` or ends in `.toml`, else a name.
    if !spec.contains('/') && !spec.ends_with(".toml") {
        return true;
    }
    let path = Path::new(".").join(spec);
    match std::fs::metadata(&path) {
        Err(_) => true, // missing, not a directory, ...: the open fails, a Read error
        Ok(m) if !m.is_file() => m.is_dir(), // a directory fails to read; FIFOs, devices block
        Ok(m) if m.len() > 1 << 20 => false,
        Ok(_) => match path.canonicalize() {
            Ok(real) => !["/proc", "/sys", "/dev"]
                .iter()
                .any(|d| real.starts_with(d)),
            Err(_) => false,
        },
    }
}
