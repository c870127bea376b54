//! Checks shared by the fuzz targets (`fuzz_targets/`) and the seed generator
//! (`examples/gen_seeds.rs`).
//!
//! Every check panics on a violated property, which libFuzzer reports as a crash:
//!
//! * [`policy`]: policy text → [`Policy`](ollama_egress::policy::Policy) →
//!   [`compile`](ollama_egress::policy::compile); the compiled tries are checked for shape
//!   (normalised, sorted, unique prefixes, valid rule ids, no redundant entries) and against a
//!   naive reference of the documented semantics (longest prefix wins, deny wins on an equal
//!   prefix, then the first rule; IPv4-mapped destinations are judged as IPv4).
//! * [`event`]: ring-buffer bytes → [`ConnectEvent`](ollama_egress_common::ConnectEvent) →
//!   [`Decoder`](ollama_egress::pipeline::Decoder) → JSON line → back, and a query for the
//!   record's own values finds it.
//! * [`dns`]: bytes → the shared DNS answer walker, against a reference decoder on
//!   `hickory-proto`: no address, no question name the reference does not see.
//! * [`log`]: `ollama-egress logs` queries (forwards, and backwards under `--limit`) return
//!   exactly the lines a naive parse-every-line reference returns, whatever the prefilter does.

pub mod dns;
pub mod event;
pub mod log;
pub mod policy;

use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;
use std::sync::OnceLock;

use time::OffsetDateTime;

/// The "now" of every fuzz run (durations in `--since` count back from it).
pub const NOW: OffsetDateTime = time::macros::datetime!(2026-11-22 10:00:00 UTC);

/// A scratch log directory for this process, under `$TMPDIR` (`cargo xtask fuzz` points that
/// at `/dev/shm` when it exists: the log targets write a file per input). The directory is
/// removed when the process exits through `exit()`, which is how libFuzzer ends a bounded run.
pub fn scratch_dir(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("ollama-egress-fuzz-")
            .tempdir()
            .expect("creating a scratch directory")
            .keep();
        SCRATCH
            .set(std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("no NUL"))
            .expect("scratch set once");
        // SAFETY: `remove_scratch` is an `extern "C" fn()` that only reads a static.
        unsafe { libc::atexit(remove_scratch) };
        dir
    });
    let path = dir.join(name);
    std::fs::create_dir_all(&path).expect("creating a scratch log directory");
    path
}

static SCRATCH: OnceLock<std::ffi::CString> = OnceLock::new();

extern "C" fn remove_scratch() {
    if let Some(dir) = SCRATCH.get() {
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(dir.as_bytes()));
        let _ = std::fs::remove_dir_all(path);
    }
}
