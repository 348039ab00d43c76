//! A model of what a go-plugin (v1.6) host makes of a plugin's stdout, written from
//! go-plugin's `client.go` and Go's standard library, independently of `handshake.rs`: the
//! tests compare the wrapper's output against it, so it must not share code with the crate.
//!
//! go-plugin reads stdout with a `bufio.Scanner` (`ScanLines`: a line ends at `\n`, one `\r`
//! before it is dropped, a last line without `\n` still counts, a token over 64 KiB is an
//! error), takes the first line, `strings.TrimSpace`s it (runes decoded one by one, an
//! invalid byte is `RuneError`, which is not space), splits it on `|`, wants at least 4 parts
//! and a `CORE` that `strconv.Atoi` accepts, and then dials `parts[3]` on network `parts[2]`.

/// Go's `bufio.MaxScanTokenSize`.
const MAX_TOKEN: usize = 64 * 1024;

/// The first line a `bufio.Scanner` with `ScanLines` returns for `stdout` (which is all the
/// plugin ever wrote), or `None` when it returns none (nothing written, or a token too long).
pub fn first_scanner_line(stdout: &[u8]) -> Option<&[u8]> {
    let line = match stdout.iter().position(|&b| b == b'\n') {
        // The buffer must hold the line and its newline.
        Some(i) if i < MAX_TOKEN => &stdout[..i],
        Some(_) => return None,
        None if stdout.is_empty() || stdout.len() >= MAX_TOKEN => return None,
        None => stdout,
    };
    Some(line.strip_suffix(b"\r").unwrap_or(line))
}

/// Go's `unicode.IsSpace`, spelled out.
fn go_is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{0B}'
            | '\u{0C}'
            | '\r'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// Go's `utf8.DecodeRune`: the first rune and its length; `None` for `RuneError`.
fn decode_rune(b: &[u8]) -> (Option<char>, usize) {
    let head = &b[..b.len().min(4)];
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap(),
    };
    match valid.chars().next() {
        Some(c) => (Some(c), c.len_utf8()),
        None => (None, 1),
    }
}

/// Go's `utf8.DecodeLastRune`.
fn decode_last_rune(b: &[u8]) -> (Option<char>, usize) {
    for k in 1..=b.len().min(4) {
        if let Ok(s) = std::str::from_utf8(&b[b.len() - k..]) {
            let mut cs = s.chars();
            if let (Some(c), None) = (cs.next(), cs.next()) {
                return (Some(c), k);
            }
        }
    }
    (None, 1)
}

/// Go's `strings.TrimSpace` on bytes.
pub fn go_trim_space(b: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < b.len() {
        match decode_rune(&b[start..]) {
            (Some(c), n) if go_is_space(c) => start += n,
            _ => break,
        }
    }
    let mut end = b.len();
    while end > start {
        match decode_last_rune(&b[start..end]) {
            (Some(c), n) if go_is_space(c) => end -= n,
            _ => break,
        }
    }
    &b[start..end]
}

/// Go's `strconv.Atoi` succeeds on `b`.
fn go_atoi_ok(b: &[u8]) -> bool {
    let digits = match b.first() {
        Some(b'+') | Some(b'-') => &b[1..],
        _ => b,
    };
    !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(b).unwrap().parse::<i64>().is_ok()
}

/// What a go-plugin host would dial after reading `stdout`: `(network, address)` as raw
/// bytes, or `None` when it refuses the handshake before dialing anything.
pub fn go_plugin_dial_target(stdout: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let line = go_trim_space(first_scanner_line(stdout)?);
    let parts: Vec<&[u8]> = line.split(|&b| b == b'|').collect();
    if parts.len() < 4 || !go_atoi_ok(parts[0]) {
        return None;
    }
    Some((parts[2].to_vec(), parts[3].to_vec()))
}
