//! `ollama-egress audit`: Ollama's exposure as findings. [`gather`] fills [`Facts`] from
//! `/proc`, the policy file, the kernel, systemd and the geo databases; the pure checks of
//! [`checks`] turn them into [`Finding`]s; [`render`] prints them as a table or JSON.

pub mod checks;
pub mod facts;
pub mod gather;
mod policy;
pub mod procnet;
pub mod render;

use std::path::PathBuf;

use serde::Serialize;

pub use facts::Facts;
pub use gather::{AuditOptions, Gatherer, Host, SystemHost, gather};

/// How bad a finding is. Ordered from the worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Reachable or abusable as it is: `audit` exits 1.
    High,
    /// A layer of defence is missing.
    Medium,
    /// Worth fixing, little exposure on its own.
    Low,
    /// For the record: nothing to fix.
    Info,
}

impl Severity {
    /// Every severity, the worst first.
    pub const ALL: [Self; 4] = [Self::High, Self::Medium, Self::Low, Self::Info];

    /// Its name in the output: `high`, `medium`, `low`, `info`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
            Self::Info => "info",
        }
    }
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable id, e.g. `listen.all-addresses`.
    pub id: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// What was seen.
    pub seen: String,
    /// How to fix it.
    pub fix: String,
}

impl Finding {
    /// A finding.
    pub fn new(
        id: &'static str,
        severity: Severity,
        seen: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            id,
            severity,
            seen: seen.into(),
            fix: fix.into(),
        }
    }
}

/// Counts per severity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// High-severity findings.
    pub high: usize,
    /// Medium-severity findings.
    pub medium: usize,
    /// Low-severity findings.
    pub low: usize,
    /// Info findings.
    pub info: usize,
}

/// The audit's result: the facts' headline and the findings, the worst first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// What was audited.
    pub facts: Facts,
    /// The findings, sorted by severity (stable within one).
    pub findings: Vec<Finding>,
}

impl Report {
    /// Runs every check over `facts`.
    pub fn new(facts: Facts) -> Self {
        let mut findings = checks::all(&facts);
        findings.sort_by_key(|f| f.severity);
        Self { facts, findings }
    }

    /// Counts per severity.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for f in &self.findings {
            match f.severity {
                Severity::High => s.high += 1,
                Severity::Medium => s.medium += 1,
                Severity::Low => s.low += 1,
                Severity::Info => s.info += 1,
            }
        }
        s
    }

    /// The exit status: 1 when a high-severity finding exists, else 0.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.findings.iter().any(|f| f.severity == Severity::High))
    }
}

/// Why the audit could not be done (`audit` exits 2).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The target could not be found.
    #[error("no target to audit: {0}")]
    Target(String),
    /// The target has no process.
    #[error("no process runs in the target ({target}, cgroup {cgroup}): is Ollama running?")]
    NoProcess {
        /// The target.
        target: String,
        /// Its cgroup.
        cgroup: PathBuf,
    },
    /// A file under `/proc` could not be read.
    #[error("reading {path}: {source} (the audit reads other processes' sockets: run it as root)")]
    Proc {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The policy file could not be read or is invalid.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// A geo database could not be opened.
    #[error(transparent)]
    Geo(#[from] ollama_egress_geo::GeoError),
}

#[cfg(test)]
mod tests;
