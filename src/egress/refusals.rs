//! Counting refusals for the sandbox's summary.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// A shared recorder of refused connections (and names the DNS stub refused), one per
/// sandbox. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Refusals {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    connections: Vec<RefusedTarget>,
    names: Vec<RefusedTarget>,
}

/// One refused destination and how often it was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedTarget {
    /// `host:port` as the sandbox asked for it (`example.org:80`, `169.254.169.254:80`), or
    /// the name for a DNS refusal.
    pub target: String,
    /// How many times.
    pub count: u64,
    /// Why, the first time (a [`super::Refusal`] or other reason, as text).
    pub reason: String,
}

/// Everything refused so far, serializable (for the diagnosis JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalSummary {
    /// Refused connections in all.
    pub connections_refused: u64,
    /// Per destination, in the order first refused.
    pub connections: Vec<RefusedTarget>,
    /// Names the DNS stub refused in all (queries, not distinct names).
    pub names_refused: u64,
    /// Per name, in the order first refused.
    pub names: Vec<RefusedTarget>,
}

/// Most distinct destinations kept per list; further ones are counted under `(others)`.
const MAX_TARGETS: usize = 1000;

fn add(list: &mut Vec<RefusedTarget>, target: &str, reason: &str) {
    if let Some(t) = list.iter_mut().find(|t| t.target == target) {
        t.count += 1;
        return;
    }
    if list.len() >= MAX_TARGETS {
        return add_other(list);
    }
    list.push(RefusedTarget {
        target: target.to_string(),
        count: 1,
        reason: reason.to_string(),
    });
}

fn add_other(list: &mut Vec<RefusedTarget>) {
    if let Some(t) = list.iter_mut().find(|t| t.target == "(others)") {
        t.count += 1;
    } else {
        list.push(RefusedTarget {
            target: "(others)".into(),
            count: 1,
            reason: "too many distinct destinations to list".into(),
        });
    }
}

impl Refusals {
    /// A new, empty recorder.
    pub fn new() -> Refusals {
        Refusals::default()
    }

    /// Record a refused connection to `target` (`host:port`) and why.
    pub fn record(&self, target: &str, reason: &str) {
        add(&mut self.inner.lock().unwrap().connections, target, reason);
    }

    /// Record a name the DNS stub refused.
    pub fn record_name(&self, name: &str, reason: &str) {
        add(&mut self.inner.lock().unwrap().names, name, reason);
    }

    /// Refused connections so far.
    pub fn count(&self) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .connections
            .iter()
            .map(|t| t.count)
            .sum()
    }

    /// A serializable copy of everything recorded.
    pub fn snapshot(&self) -> RefusalSummary {
        let inner = self.inner.lock().unwrap();
        RefusalSummary {
            connections_refused: inner.connections.iter().map(|t| t.count).sum(),
            connections: inner.connections.clone(),
            names_refused: inner.names.iter().map(|t| t.count).sum(),
            names: inner.names.clone(),
        }
    }

    /// One line for the diagnosis, e.g. `network: 3 connections refused (example.org:80 x2,
    /// 169.254.169.254:80)`, with `; 2 names refused by DNS (…)` when the DNS stub refused
    /// some; `None` when nothing was refused.
    pub fn summary(&self) -> Option<String> {
        self.snapshot().text()
    }
}

impl RefusalSummary {
    /// The one-line text of [`Refusals::summary`].
    pub fn text(&self) -> Option<String> {
        fn list(items: &[RefusedTarget]) -> String {
            items
                .iter()
                .map(|t| match t.count {
                    1 => t.target.clone(),
                    n => format!("{} x{n}", t.target),
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
        let mut parts = Vec::new();
        if self.connections_refused > 0 {
            let n = self.connections_refused;
            let s = if n == 1 { "connection" } else { "connections" };
            parts.push(format!("{n} {s} refused ({})", list(&self.connections)));
        }
        if self.names_refused > 0 {
            let n = self.names_refused;
            let s = if n == 1 { "name" } else { "names" };
            parts.push(format!("{n} {s} refused by DNS ({})", list(&self.names)));
        }
        (!parts.is_empty()).then(|| format!("network: {}", parts.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_and_names_each_refusal() {
        let r = Refusals::new();
        assert_eq!(r.summary(), None);
        r.record("example.org:80", "no rule allows this host");
        r.record("169.254.169.254:80", "link-local");
        r.record("example.org:80", "no rule allows this host");
        assert_eq!(
            r.summary().unwrap(),
            "network: 3 connections refused (example.org:80 x2, 169.254.169.254:80)"
        );
        r.clone().record_name("evil.test", "no rule");
        assert_eq!(
            r.summary().unwrap(),
            "network: 3 connections refused (example.org:80 x2, 169.254.169.254:80); \
             1 name refused by DNS (evil.test)"
        );
        let json = serde_json::to_value(r.snapshot()).unwrap();
        assert_eq!(json["connections_refused"], 3);
        assert_eq!(json["connections"][0]["target"], "example.org:80");
        assert_eq!(json["connections"][0]["count"], 2);
        assert_eq!(r.count(), 3);
    }

    #[test]
    fn distinct_targets_are_bounded() {
        let r = Refusals::new();
        for i in 0..MAX_TARGETS + 10 {
            r.record(&format!("h{i}.test:80"), "x");
        }
        let s = r.snapshot();
        assert_eq!(s.connections.len(), MAX_TARGETS + 1);
        assert_eq!(s.connections.last().unwrap().count, 10);
        assert_eq!(s.connections_refused, (MAX_TARGETS + 10) as u64);
    }
}
