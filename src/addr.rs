//! Safe socket-address translation between sandbox and host (in progress).
