//! The event log: JSON lines on disk, rotation, queries.
//!
//! The daemon appends one [`EventRecord`] per connection decision to `<log-dir>/events.jsonl`
//! through a [`LogWriter`], which rotates the file by size (`events.jsonl.1` is the newest
//! rotated file, `events.jsonl.N` the oldest). `ollama-egress logs` (`crate::cli::logs`)
//! reads them back with [`query`] (one pass, line by line, bounded memory; backwards from the
//! end under `--limit`) or [`follow`] (the newest matches, then new lines as they are
//! appended, across rotations). A cheap raw-text test skips parsing lines a selective filter
//! cannot match.
//!
//! Everything here is synchronous: [`LogWriter`] does one `write(2)` per record and [`follow`]
//! polls the file. Call them from a blocking thread (`tokio::task::spawn_blocking`) when in an
//! async context.

use std::io;
use std::path::PathBuf;

mod filter;
mod follow;
mod lines;
mod prefilter;
mod query;
mod record;
mod revlines;
mod timespec;
mod writer;

pub use filter::Filter;
pub use follow::{DEFAULT_FOLLOW_BACKLOG, POLL_INTERVAL, follow};
pub(crate) use lines::check_dir;
pub use query::{QueryStats, log_files, query, scan};
pub use record::EventRecord;
#[cfg(test)]
pub(crate) use record::tests::sample;
pub(crate) use timespec::{SINCE_FORMS, UNTIL_FORMS};
pub use timespec::{parse_since, parse_until};
pub use writer::{DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, LogWriter, RotateOptions, encode_line};

/// Name of the active log file inside the log directory.
pub const EVENTS_FILE: &str = "events.jsonl";

/// Errors of the log store. Every variant that concerns a file names it.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log directory or a file in it could be controlled by someone other than the user
    /// the daemon runs as, or is not what a log file is.
    #[error("refusing {path}: {problem}")]
    Unsafe {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The log directory could not be created or given its permissions.
    #[error("cannot create log directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A log file could not be opened (for appending or for reading).
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Appending a record failed (e.g. `ENOSPC`); the record was dropped and counted, the
    /// writer stays usable and retries on the next record.
    #[error("cannot write event to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Rotating the log failed; the record that needed the room was dropped and counted, the
    /// next record retries the rotation.
    #[error("cannot rotate {path}: {source}")]
    Rotate {
        /// The file being rotated (or the rotated file in the way).
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A record could not be encoded as JSON (not expected with well-formed records).
    #[error("cannot encode event for {path}: {source}")]
    Encode {
        /// The log file it was meant for.
        path: PathBuf,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// The log directory does not exist.
    #[error(
        "log directory {path} does not exist: the daemon creates it and writes events.jsonl \
         there (`ollama-egress run`); use --log-dir if it runs with another one"
    )]
    NoLogDir {
        /// The directory.
        path: PathBuf,
    },
    /// The log directory exists but holds no event log yet.
    #[error(
        "no event log at {path}: the daemon writes it (`ollama-egress run`); use --log-dir if \
         it runs with another log directory"
    )]
    NoLog {
        /// The expected `events.jsonl`.
        path: PathBuf,
    },
    /// The log exists but this user may not read it.
    #[error(
        "permission denied reading {path}: the log is readable by root and the log \
         directory's group only (try sudo)"
    )]
    PermissionDenied {
        /// The file or directory.
        path: PathBuf,
    },
    /// Reading a log file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A `--since` value is neither a duration nor an RFC 3339 time.
    #[error("invalid --since {input:?}: expected {forms}", forms = timespec::SINCE_FORMS)]
    InvalidSince {
        /// The rejected input.
        input: String,
    },
    /// An `--until` value is not an RFC 3339 time (or a duration).
    #[error("invalid --until {input:?}: expected {forms}", forms = timespec::UNTIL_FORMS)]
    InvalidUntil {
        /// The rejected input.
        input: String,
    },
    /// Writing the query's output failed (other than a closed pipe, which ends quietly).
    #[error("cannot write output: {source}")]
    Output {
        /// The OS error.
        source: io::Error,
    },
}

impl LogError {
    /// Maps an error opening or reading `path` to [`LogError::PermissionDenied`] or
    /// [`LogError::Read`].
    pub(crate) fn read(path: impl Into<PathBuf>, source: io::Error) -> LogError {
        let path = path.into();
        if source.kind() == io::ErrorKind::PermissionDenied {
            LogError::PermissionDenied { path }
        } else {
            LogError::Read { path, source }
        }
    }
}
