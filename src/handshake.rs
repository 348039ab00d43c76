//! go-plugin handshake line parsing and rewriting (in progress).
