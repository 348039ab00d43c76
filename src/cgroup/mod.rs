//! cgroup limits, events and cleanup over v1 and v2 (in progress).
