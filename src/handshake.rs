//! The go-plugin handshake line: parsing, byte-exact rewriting and bounded reading.
//!
//! A go-plugin plugin announces itself by printing one line on stdout:
//!
//! ```text
//! CORE|APP_VERSION|NETWORK|ADDR|PROTOCOL[|SERVER_CERT[|MUX]]
//! ```
//!
//! for example `1|1|unix|/run/plugin-sockets/plugin123|grpc`. The host (go-plugin v1.6,
//! `client.go`) reads the *first* line of stdout, applies `strings.TrimSpace`, splits on `|`
//! and refuses fewer than 4 parts; the protocol defaults to `netrpc` when absent;
//! `SERVER_CERT` is raw-std base64 DER; `MUX` is a Go boolean. Parts after the seventh are
//! ignored by go-plugin, so they are kept here (see [`Handshake::extra`]) rather than refused.
//!
//! The sandbox only needs to change the address: [`rewrite`] replaces the `NETWORK` and `ADDR`
//! fields and leaves every other byte of the line (whitespace, certificate, extra fields, the
//! line ending) exactly as the plugin wrote it.
//!
//! ```
//! use sandbox_runner::handshake;
//!
//! let line = b"1|1|unix|/run/plugin-sockets/p.sock|grpc\n";
//! let hs = handshake::parse(line).unwrap();
//! assert_eq!(hs.addr(), "/run/plugin-sockets/p.sock");
//! assert_eq!(hs.protocol(), "grpc");
//! let out = handshake::rewrite(line, "unix", "/tmp/host/links/s1").unwrap();
//! assert_eq!(out, b"1|1|unix|/tmp/host/links/s1|grpc\n");
//! ```

use std::ops::Range;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::runner::AddrTranslator;

/// The longest handshake line accepted, in bytes, *including* its line ending.
///
/// A line carrying a server certificate (base64 DER) is typically 1–3 KiB; 64 KiB leaves room
/// for large certificate chains while bounding what a plugin can make the host buffer.
pub const MAX_HANDSHAKE_LINE: usize = 64 * 1024;

/// The protocol go-plugin assumes when the handshake has no `PROTOCOL` field.
pub const DEFAULT_PROTOCOL: &str = "netrpc";

/// Index of the `NETWORK` field.
const NETWORK_FIELD: usize = 2;
/// Index of the `ADDR` field.
const ADDR_FIELD: usize = 3;

/// Why a handshake line could not be read, parsed or rewritten.
///
/// Reading errors ([`Timeout`](Self::Timeout), [`Eof`](Self::Eof),
/// [`TooLong`](Self::TooLong) from the reader, [`Io`](Self::Io)) carry the bytes that were
/// already taken from the plugin's stdout, so a forwarding wrapper can pass them on unchanged
/// and a diagnosis can show them.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The line is empty (or only whitespace).
    #[error(
        "empty go-plugin handshake line: expected CORE|APP_VERSION|NETWORK|ADDR|PROTOCOL\
         [|SERVER_CERT[|MUX]] as the first line on stdout"
    )]
    Empty,
    /// The line has fewer than the four `|`-separated parts go-plugin requires.
    #[error(
        "go-plugin handshake line has {found} '|'-separated part(s), expected at least 4 \
         (CORE|APP_VERSION|NETWORK|ADDR[|PROTOCOL[|SERVER_CERT[|MUX]]])"
    )]
    TooFewParts {
        /// How many parts were found.
        found: usize,
    },
    /// The line is longer than [`MAX_HANDSHAKE_LINE`].
    #[error(
        "go-plugin handshake line is longer than {max} bytes (got at least {len}): expected \
         one short line ending in a newline"
    )]
    TooLong {
        /// The length seen (for the reader: the bytes taken before giving up).
        len: usize,
        /// The limit, [`MAX_HANDSHAKE_LINE`].
        max: usize,
        /// The bytes already taken from the reader (empty when returned by [`parse`]).
        partial: Vec<u8>,
    },
    /// The line is not valid UTF-8.
    #[error("go-plugin handshake line is not valid UTF-8 (first bad byte at offset {offset}): expected a text line")]
    NotUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// A line feed appears before the end of the line.
    #[error(
        "go-plugin handshake line contains a newline at offset {offset}: expected exactly one line"
    )]
    EmbeddedNewline {
        /// Byte offset of the newline.
        offset: usize,
    },
    /// The `CORE` field is not an integer.
    #[error("go-plugin handshake CORE field '{value}' is not an integer: expected the core protocol version, e.g. 1")]
    BadCoreVersion {
        /// The field as written.
        value: String,
    },
    /// A replacement value given to [`rewrite`] cannot be placed in a handshake field.
    #[error("cannot put {field} '{value}' in a go-plugin handshake line: {why}")]
    BadReplacement {
        /// `"network"` or `"address"`.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No complete line arrived before the deadline.
    #[error(
        "no go-plugin handshake line on stdout within {timeout:?} ({} byte(s) received{}): \
         the plugin may be hung, not a go-plugin plugin, or missing the magic cookie",
        partial.len(), preview(partial)
    )]
    Timeout {
        /// The deadline that passed.
        timeout: Duration,
        /// The bytes received so far.
        partial: Vec<u8>,
    },
    /// Stdout reached end of file before a complete line: the plugin exited (or closed its
    /// stdout) before its handshake.
    ///
    /// go-plugin's host would still parse a final line without its newline; a caller that
    /// wants the same can [`parse`] `partial`, though the plugin is most likely gone.
    #[error(
        "plugin closed stdout before completing its go-plugin handshake line ({} byte(s) \
         received{}): {}",
        partial.len(), preview(partial),
        if partial.is_empty() { "it most likely exited early" } else {
            "a line with no newline at end of file is refused, as go-plugin would still read it \
             as the handshake"
        }
    )]
    Eof {
        /// The bytes received before end of file (a line without its newline, or nothing).
        partial: Vec<u8>,
    },
    /// The line is a handshake, but the address it announces must not reach the host (outside
    /// the socket directory, a symlink, not a socket, TCP without a shared network, ...).
    #[error("the go-plugin handshake announces an address the host must not use: {source}")]
    AddrRefused {
        /// Why the translator refused the address.
        source: crate::error::AddrError,
    },
    /// Reading stdout failed.
    #[error("reading the go-plugin handshake line from the plugin's stdout failed: {source}")]
    Io {
        /// The underlying error.
        source: std::io::Error,
        /// The bytes received before the error.
        partial: Vec<u8>,
    },
}

impl HandshakeError {
    /// The bytes already taken from the reader when a reading error happened (empty for
    /// parsing errors). A forwarding wrapper writes these through unchanged.
    pub fn partial(&self) -> &[u8] {
        match self {
            HandshakeError::TooLong { partial, .. }
            | HandshakeError::Timeout { partial, .. }
            | HandshakeError::Eof { partial }
            | HandshakeError::Io { partial, .. } => partial,
            _ => &[],
        }
    }
}

/// A short, printable preview of received bytes for error messages.
fn preview(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    const MAX: usize = 120;
    let shown = &bytes[..bytes.len().min(MAX)];
    let mut s = String::from(": \"");
    s.extend(String::from_utf8_lossy(shown).escape_debug());
    if bytes.len() > MAX {
        s.push_str("...");
    }
    s.push('"');
    s
}

/// The network kind announced in a handshake, as go-plugin's host understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkKind {
    /// `unix`: `ADDR` is a socket path.
    Unix,
    /// `tcp`: `ADDR` is `host:port`.
    Tcp,
    /// Anything else. go-plugin's host refuses it ("Unknown address type"); the parser keeps
    /// it so the caller decides (a translator refuses it as unsupported).
    Unknown,
}

/// A parsed go-plugin handshake line.
///
/// The fields are the exact text of the line (after go-plugin's `TrimSpace` of the whole
/// line); the original bytes are kept (see [`Handshake::raw`]) so that a rewrite changes only
/// the address fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The line as given, including any line ending.
    raw: Vec<u8>,
    /// Byte range in `raw` of every `|`-separated field (at least 4).
    fields: Vec<Range<usize>>,
}

impl Handshake {
    fn field(&self, i: usize) -> Option<&str> {
        let r = self.fields.get(i)?.clone();
        // `parse` checked that `raw` is UTF-8 and ranges fall on '|' / trimmed boundaries.
        std::str::from_utf8(&self.raw[r]).ok()
    }

    fn required(&self, i: usize) -> &str {
        self.field(i).unwrap_or_default()
    }

    /// `CORE`: the core protocol version (an integer; go-plugin's is 1).
    pub fn core_version(&self) -> &str {
        self.required(0)
    }

    /// `CORE` as a number (validated by [`parse`]).
    pub fn core_version_number(&self) -> i64 {
        self.core_version().parse().unwrap_or_default()
    }

    /// `APP_VERSION`: the application protocol version the plugin speaks.
    pub fn app_version(&self) -> &str {
        self.required(1)
    }

    /// `NETWORK`: `unix` or `tcp` for go-plugin (kept as written).
    pub fn network(&self) -> &str {
        self.required(NETWORK_FIELD)
    }

    /// The kind of [`network`](Self::network).
    pub fn network_kind(&self) -> NetworkKind {
        match self.network() {
            "unix" => NetworkKind::Unix,
            "tcp" => NetworkKind::Tcp,
            _ => NetworkKind::Unknown,
        }
    }

    /// `ADDR`: a socket path (unix) or `host:port` (tcp), as the plugin sees it.
    pub fn addr(&self) -> &str {
        self.required(ADDR_FIELD)
    }

    /// `PROTOCOL` as written, or `None` when the line has only four parts.
    pub fn protocol_field(&self) -> Option<&str> {
        self.field(4)
    }

    /// The protocol: `PROTOCOL`, or [`DEFAULT_PROTOCOL`] (`netrpc`) when absent, as go-plugin.
    pub fn protocol(&self) -> &str {
        self.protocol_field().unwrap_or(DEFAULT_PROTOCOL)
    }

    /// `SERVER_CERT` as written (raw-std base64 DER), when present.
    ///
    /// go-plugin only loads it when it is longer than 50 bytes (shorter values are leftovers
    /// of old plugin versions); that decision is the host's, so it is returned unfiltered.
    pub fn server_cert(&self) -> Option<&str> {
        self.field(5)
    }

    /// `MUX` as written, when present.
    pub fn mux_field(&self) -> Option<&str> {
        self.field(6)
    }

    /// `MUX` interpreted with Go's `strconv.ParseBool`: `None` when absent or not a boolean.
    pub fn mux(&self) -> Option<bool> {
        match self.mux_field()? {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
            _ => None,
        }
    }

    /// Parts after the seventh, which go-plugin ignores, kept as written.
    pub fn extra(&self) -> Vec<&str> {
        (7..self.fields.len())
            .filter_map(|i| self.field(i))
            .collect()
    }

    /// The line exactly as given to [`parse`], including its line ending, if any.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// This line with only `NETWORK` and `ADDR` replaced; see [`rewrite`].
    pub fn rewrite(&self, network: &str, addr: &str) -> Result<Vec<u8>, HandshakeError> {
        check_replacement("network", network)?;
        check_replacement("address", addr)?;
        let net = self.fields[NETWORK_FIELD].clone();
        let adr = self.fields[ADDR_FIELD].clone();
        let mut out = Vec::with_capacity(self.raw.len() + network.len() + addr.len());
        out.extend_from_slice(&self.raw[..net.start]);
        out.extend_from_slice(network.as_bytes());
        out.extend_from_slice(&self.raw[net.end..adr.start]);
        out.extend_from_slice(addr.as_bytes());
        out.extend_from_slice(&self.raw[adr.end..]);
        Ok(out)
    }
}

/// Refuses a replacement field value that would change how the line splits or trims.
fn check_replacement(field: &'static str, value: &str) -> Result<(), HandshakeError> {
    let why = if value.is_empty() {
        Some("it is empty")
    } else if value.contains('|') {
        Some("it contains '|', the field separator")
    } else if value.contains(['\n', '\r']) {
        Some("it contains a line break")
    } else if value.contains('\0') {
        Some("it contains a NUL byte")
    } else if value.trim() != value {
        Some("it starts or ends with whitespace, which go-plugin would trim")
    } else {
        None
    };
    match why {
        Some(why) => Err(HandshakeError::BadReplacement {
            field,
            value: value.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// Parses a go-plugin handshake line, with or without its trailing `\n` / `\r\n`.
///
/// Follows go-plugin v1.6's host: the whole line is trimmed of surrounding whitespace
/// (`strings.TrimSpace`), split on `|`, and must have at least 4 parts; `CORE` must be an
/// integer. Unknown networks parse (see [`Handshake::network_kind`]); the other fields are not
/// interpreted beyond what the accessors document.
pub fn parse(line: &[u8]) -> Result<Handshake, HandshakeError> {
    if line.len() > MAX_HANDSHAKE_LINE {
        return Err(HandshakeError::TooLong {
            len: line.len(),
            max: MAX_HANDSHAKE_LINE,
            partial: Vec::new(),
        });
    }
    let text = std::str::from_utf8(line).map_err(|e| HandshakeError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let body = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text);
    if let Some(offset) = body.find('\n') {
        return Err(HandshakeError::EmbeddedNewline { offset });
    }
    // Go's strings.TrimSpace and Rust's str::trim use the same set (Unicode White_Space).
    let trimmed = body.trim_start();
    let start = body.len() - trimmed.len();
    let trimmed = trimmed.trim_end();
    if trimmed.is_empty() {
        return Err(HandshakeError::Empty);
    }
    let mut fields = Vec::with_capacity(7);
    let mut pos = start;
    for part in trimmed.split('|') {
        fields.push(pos..pos + part.len());
        pos += part.len() + 1;
    }
    if fields.len() < 4 {
        return Err(HandshakeError::TooFewParts {
            found: fields.len(),
        });
    }
    let core = &text[fields[0].clone()];
    if core.parse::<i64>().is_err() {
        return Err(HandshakeError::BadCoreVersion {
            value: core.to_owned(),
        });
    }
    Ok(Handshake {
        raw: line.to_vec(),
        fields,
    })
}

/// Returns `line` with only its `NETWORK` and `ADDR` fields replaced by `network` and `addr`.
///
/// Every other byte (surrounding whitespace, `CORE`, `APP_VERSION`, `PROTOCOL`, the
/// certificate, `MUX`, extra parts and the line ending) is copied unchanged. The line must
/// parse (see [`parse`]); the new values must be non-empty and free of `|`, line breaks, NUL
/// and surrounding whitespace, so that the result parses back to them.
pub fn rewrite(line: &[u8], network: &str, addr: &str) -> Result<Vec<u8>, HandshakeError> {
    parse(line)?.rewrite(network, addr)
}

/// Reads the first line of `r` (the plugin's stdout), up to and including its `\n`, within
/// `timeout`, never buffering more than [`MAX_HANDSHAKE_LINE`] bytes.
///
/// Bytes after the newline stay in `r`. On error, the bytes already taken from `r` are in the
/// error (see [`HandshakeError::partial`]). Cancel-safe with respect to `r`: the reader is only
/// advanced past bytes that were copied into the line.
pub async fn read_handshake_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    timeout: Duration,
) -> Result<Vec<u8>, HandshakeError> {
    // A timeout too large to represent (e.g. `Duration::MAX`) means no deadline.
    let deadline = tokio::time::Instant::now().checked_add(timeout);
    let mut line = Vec::new();
    loop {
        let filled = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, r.fill_buf()).await,
            None => Ok(r.fill_buf().await),
        };
        let chunk = match filled {
            Err(_) => {
                return Err(HandshakeError::Timeout {
                    timeout,
                    partial: line,
                })
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(Err(source)) => {
                return Err(HandshakeError::Io {
                    source,
                    partial: line,
                })
            }
            Ok(Ok(chunk)) => chunk,
        };
        if chunk.is_empty() {
            return Err(HandshakeError::Eof { partial: line });
        }
        let room = MAX_HANDSHAKE_LINE - line.len();
        let window = &chunk[..chunk.len().min(room)];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&window[..=i]);
                r.consume(i + 1);
                return Ok(line);
            }
            None => {
                let n = window.len();
                line.extend_from_slice(window);
                r.consume(n);
                if line.len() >= MAX_HANDSHAKE_LINE {
                    return Err(HandshakeError::TooLong {
                        len: line.len(),
                        max: MAX_HANDSHAKE_LINE,
                        partial: line,
                    });
                }
            }
        }
    }
}

/// Reads the handshake line (see [`read_handshake_line`]) and parses it.
///
/// Returns the raw line including its newline, and the parsed [`Handshake`]. go-plugin's host
/// skips nothing: the first line on stdout is the handshake. When the line is read but does
/// not parse, the parse error is returned and the raw line is lost; a caller that must forward
/// it uses [`read_handshake_line`] and [`parse`] separately.
pub async fn read_handshake<R: AsyncBufRead + Unpin>(
    r: &mut R,
    timeout: Duration,
) -> Result<(Vec<u8>, Handshake), HandshakeError> {
    let line = read_handshake_line(r, timeout).await?;
    let hs = parse(&line)?;
    Ok((line, hs))
}

/// A handshake that may be passed on to the host: read, parsed, and rewritten to the address
/// the translator handed out.
#[derive(Debug, Clone)]
pub struct HostHandshake {
    /// The handshake as the plugin printed it.
    pub handshake: Handshake,
    /// The line to give the host: [`Handshake::raw`] with only `NETWORK` and `ADDR` replaced.
    pub line: Vec<u8>,
    /// The network the host connects with.
    pub network: String,
    /// The address on the host side.
    pub addr: String,
}

/// Reads the plugin's first stdout line and returns it rewritten for the host, or why it
/// must not reach the host at all.
///
/// This is the one gate both the CLI wrapper and [`crate::goplugin`] pass a handshake
/// through. A go-plugin host takes the first line of stdout as the handshake whatever it
/// holds (no UTF-8 check, a last line without newline, `\r\n`, surrounding whitespace), so
/// the rule is: **a line is passed on only when it is a handshake that was parsed and whose
/// address was translated and rewritten**. Every other outcome is an error, and the caller
/// must stop the plugin instead of forwarding anything:
///
/// - not valid UTF-8 anywhere in the line ([`HandshakeError::NotUtf8`]);
/// - end of file before a newline ([`HandshakeError::Eof`], with the unterminated bytes);
/// - longer than [`MAX_HANDSHAKE_LINE`], before or after the rewrite
///   ([`HandshakeError::TooLong`]);
/// - not a handshake (too few parts, empty, bad `CORE`), or an address the translator
///   refuses ([`HandshakeError::AddrRefused`]);
/// - no line within `timeout`, or a read error.
pub async fn read_for_host<R, T>(
    r: &mut R,
    timeout: Duration,
    translator: &T,
) -> Result<HostHandshake, HandshakeError>
where
    R: AsyncBufRead + Unpin,
    T: AddrTranslator + ?Sized,
{
    let line = read_handshake_line(r, timeout).await?;
    for_host(&line, translator)
}

/// The parsing half of [`read_for_host`]: `line` is one complete line as read from the
/// plugin's stdout, which must end in `\n`.
pub fn for_host<T>(line: &[u8], translator: &T) -> Result<HostHandshake, HandshakeError>
where
    T: AddrTranslator + ?Sized,
{
    if line.last() != Some(&b'\n') {
        return Err(HandshakeError::Eof {
            partial: line.to_vec(),
        });
    }
    let handshake = parse(line)?;
    let (network, addr) = translator
        .plugin_to_host(handshake.network(), handshake.addr())
        .map_err(|source| HandshakeError::AddrRefused { source })?;
    let line = handshake.rewrite(&network, &addr)?;
    // A longer host address could push the line past what a go-plugin host reads.
    if line.len() > MAX_HANDSHAKE_LINE {
        return Err(HandshakeError::TooLong {
            len: line.len(),
            max: MAX_HANDSHAKE_LINE,
            partial: Vec::new(),
        });
    }
    Ok(HostHandshake {
        handshake,
        line,
        network,
        addr,
    })
}
