//! `Diagnosis`: what happened to a plugin, as data (serde) and as one short paragraph that
//! says what happened and why, in one read.

use serde::{Deserialize, Serialize};

use crate::cgroup::{Counters, Limits};
use crate::status::{signal_name, ExitStatus};

/// What is known about how a sandboxed plugin ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The sandbox ID.
    pub id: String,
    /// The program that ran.
    pub program: String,
    /// How the plugin ended, when it has.
    pub status: Option<ExitStatus>,
    /// The exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The name of the signal that killed it (`SIGKILL`), if one did.
    pub signal_name: Option<String>,
    /// Whether the kernel reported a core dump.
    pub core_dumped: bool,
    /// The setup failure that kept the plugin from starting, if any.
    pub setup_error: Option<String>,
    /// Whether the plugin is still running.
    pub running: bool,
    /// The cgroup limits it ran under, if any.
    pub limits: Option<Limits>,
    /// The cgroup counters and peak usage at the end (or now).
    pub counters: Option<Counters>,
    /// The wall-clock limit it ran under (`[limits] timeout`, `--timeout`), in milliseconds.
    #[serde(default)]
    pub time_limit_ms: Option<u64>,
    /// Whether the runner stopped it because it reached that limit.
    #[serde(default)]
    pub timed_out: bool,
    /// What the egress allow-list refused (`[network] allow`, `--allow-net`): connections
    /// and DNS names, counted per destination; null without rules.
    #[serde(default)]
    pub network: Option<crate::egress::RefusalSummary>,
    /// One short paragraph that says what happened and why.
    pub text: String,
}

/// `64.0 MiB`, `512 KiB`, `3 B`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A limit as written: `64 MiB` for whole MiB, else like [`human_bytes`].
fn limit_bytes(b: u64) -> String {
    if b % (1 << 30) == 0 {
        format!("{} GiB", b >> 30)
    } else if b % (1 << 20) == 0 {
        format!("{} MiB", b >> 20)
    } else {
        human_bytes(b)
    }
}

fn times(n: u64) -> String {
    if n == 1 {
        "once".into()
    } else {
        format!("{n} times")
    }
}

impl Diagnosis {
    /// Builds the diagnosis and its text from the facts.
    pub fn new(
        id: &str,
        program: &str,
        status: Option<ExitStatus>,
        setup_error: Option<String>,
        running: bool,
    ) -> Self {
        let mut d = Diagnosis {
            id: id.to_string(),
            program: program.to_string(),
            status,
            exit_code: match status {
                Some(ExitStatus::Exited { code }) => Some(code),
                _ => None,
            },
            signal_name: status.and_then(|s| s.signal()).map(signal_name),
            core_dumped: matches!(
                status,
                Some(ExitStatus::Signaled {
                    core_dumped: true,
                    ..
                })
            ),
            setup_error,
            running,
            limits: None,
            counters: None,
            time_limit_ms: None,
            timed_out: false,
            network: None,
            text: String::new(),
        };
        d.text = d.render();
        d
    }

    /// Adds the cgroup limits and counters, and says what they explain.
    pub fn with_cgroup(mut self, limits: Limits, counters: Counters) -> Self {
        self.limits = Some(limits);
        self.counters = Some(counters);
        self.text = self.render();
        self
    }

    /// Adds the wall-clock limit the plugin ran under, and whether it was stopped at it.
    pub fn with_time_limit(mut self, limit: std::time::Duration, timed_out: bool) -> Self {
        self.time_limit_ms = Some(limit.as_millis() as u64);
        self.timed_out = timed_out;
        self.text = self.render();
        self
    }

    /// Adds what the egress allow-list refused, e.g. `network: 3 connections refused
    /// (example.org:80 x2, 169.254.169.254:80)` in the text (nothing when nothing was).
    pub fn with_network(mut self, refused: crate::egress::RefusalSummary) -> Self {
        self.network = Some(refused);
        self.text = self.render();
        self
    }

    /// The reasons the cgroup counters give, e.g. "the OOM killer ran once; peak memory
    /// 64.0 MiB of a 64 MiB limit".
    fn reasons(&self) -> Vec<String> {
        let (Some(l), Some(c)) = (&self.limits, &self.counters) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let ooms = c.oom_kill.unwrap_or(0).max(c.oom_group_kill.unwrap_or(0));
        if ooms > 0 {
            let mut s = format!("the OOM killer ran {}", times(ooms));
            if let (Some(peak), Some(limit)) = (c.memory_peak, l.memory) {
                s.push_str(&format!(
                    "; peak memory {} of a {} limit",
                    human_bytes(peak),
                    limit_bytes(limit)
                ));
            }
            out.push(s);
        }
        if let (Some(n), Some(limit)) = (c.pids_max, l.pids) {
            if n > 0 {
                out.push(format!(
                    "fork failed {}: pids limit {limit} reached",
                    times(n)
                ));
            }
        }
        out
    }

    fn render(&self) -> String {
        let p = &self.program;
        if let Some(e) = &self.setup_error {
            return format!("{p} did not start: {e}");
        }
        let network = self.network.as_ref().and_then(|n| n.text());
        if self.running {
            let mut text = format!("{p} is still running in sandbox {}", self.id);
            if let Some(n) = network {
                text.push_str(&format!("; {n}"));
            }
            return text;
        }
        let Some(s) = self.status else {
            return format!("{p} was not started");
        };
        let reasons = self.reasons();
        let mut text = match self.time_limit_ms.filter(|_| self.timed_out) {
            Some(ms) => format!(
                "{p} stopped at its time limit of {}; {s}",
                crate::profile::format_duration(std::time::Duration::from_millis(ms))
            ),
            None => format!("{p} {s}"),
        };
        if s.signal() == Some(libc::SIGSYS) {
            text.push_str(": the seccomp filter refused a system call");
        }
        if !reasons.is_empty() {
            text.push_str(if s.signal().is_some() { ": " } else { "; " });
            text.push_str(&reasons.join("; "));
        }
        if let Some(n) = network {
            text.push_str(&format!("; {n}"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_and_pids_are_explained() {
        let limits = Limits {
            memory: Some(64 << 20),
            pids: Some(16),
            ..Default::default()
        };
        let c = Counters {
            oom_kill: Some(1),
            memory_peak: Some(64 << 20),
            ..Default::default()
        };
        let d = Diagnosis::new(
            "i",
            "tail",
            Some(ExitStatus::Signaled {
                signal: 9,
                core_dumped: false,
            }),
            None,
            false,
        )
        .with_cgroup(limits.clone(), c);
        assert_eq!(
            d.text,
            "tail killed by SIGKILL: the OOM killer ran once; peak memory 64.0 MiB of a 64 MiB limit"
        );
        let c = Counters {
            pids_max: Some(12),
            ..Default::default()
        };
        let d = Diagnosis::new("i", "sh", Some(ExitStatus::Exited { code: 1 }), None, false)
            .with_cgroup(limits, c);
        assert_eq!(
            d.text,
            "sh exited with status 1; fork failed 12 times: pids limit 16 reached"
        );
        let d = Diagnosis::new("i", "sh", Some(ExitStatus::Exited { code: 3 }), None, false);
        assert_eq!(d.text, "sh exited with status 3");
        assert_eq!(d.exit_code, Some(3));
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains("\"exit_code\":3"), "{json}");
    }

    #[test]
    fn a_time_limit_is_named() {
        let term = Some(ExitStatus::Signaled {
            signal: libc::SIGTERM,
            core_dumped: false,
        });
        let d = Diagnosis::new("i", "sleep", term, None, false)
            .with_time_limit(std::time::Duration::from_secs(30), true);
        assert_eq!(
            d.text,
            "sleep stopped at its time limit of 30s; killed by SIGTERM"
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["timed_out"], true);
        assert_eq!(json["time_limit_ms"], 30_000);
        // Under a limit it did not reach: the usual text.
        let d = Diagnosis::new("i", "sh", Some(ExitStatus::Exited { code: 1 }), None, false)
            .with_time_limit(std::time::Duration::from_secs(30), false);
        assert_eq!(d.text, "sh exited with status 1");
        // Older JSON without the fields still reads.
        let old = r#"{"id":"i","program":"p","status":null,"exit_code":null,"signal_name":null,
            "core_dumped":false,"setup_error":null,"running":false,"limits":null,
            "counters":null,"text":"t"}"#;
        let d: Diagnosis = serde_json::from_str(old).unwrap();
        assert!(!d.timed_out && d.time_limit_ms.is_none());
        assert!(d.network.is_none());
    }

    #[test]
    fn network_refusals_are_counted_and_named() {
        let r = crate::egress::Refusals::new();
        r.record("example.org:80", "no rule allows this host");
        r.record("169.254.169.254:80", "link-local");
        r.record("example.org:80", "no rule allows this host");
        let d = Diagnosis::new("i", "sh", Some(ExitStatus::Exited { code: 0 }), None, false)
            .with_network(r.snapshot());
        assert_eq!(
            d.text,
            "sh exited with status 0; network: 3 connections refused (example.org:80 x2, \
             169.254.169.254:80)"
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["network"]["connections_refused"], 3);
        assert_eq!(
            json["network"]["connections"][1]["target"],
            "169.254.169.254:80"
        );
        // Rules but nothing refused: the usual text, and the (empty) counts in the JSON.
        let d = Diagnosis::new("i", "sh", Some(ExitStatus::Exited { code: 0 }), None, false)
            .with_network(crate::egress::Refusals::new().snapshot());
        assert_eq!(d.text, "sh exited with status 0");
        assert_eq!(
            serde_json::to_value(&d).unwrap()["network"]["connections_refused"],
            0
        );
    }
}
