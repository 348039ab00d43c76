//! `Diagnosis`: what happened to a plugin, as data (serde) and as one short paragraph.

use serde::{Deserialize, Serialize};

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
    /// The name of the signal that killed it (`SIGKILL`), if one did.
    pub signal_name: Option<String>,
    /// The setup failure that kept the plugin from starting, if any.
    pub setup_error: Option<String>,
    /// Whether the plugin is still running.
    pub running: bool,
    /// One short paragraph that says what happened and why.
    pub text: String,
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
        let text = if let Some(e) = &setup_error {
            format!("{program} did not start: {e}")
        } else if running {
            format!("{program} is still running in sandbox {id}")
        } else if let Some(s) = status {
            format!("{program} {s}")
        } else {
            format!("{program} was not started")
        };
        Diagnosis {
            id: id.to_string(),
            program: program.to_string(),
            status,
            signal_name: status.and_then(|s| s.signal()).map(signal_name),
            setup_error,
            running,
            text,
        }
    }
}
