//! What the kernel's `--process` marking needs from the system: the target name as a `comm`,
//! tracefs (aya attaches tracepoints through it), and the layout of the exit tracepoint.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::TargetError;
use crate::loader::MarkOffsets;

/// Where tracefs is mounted on current kernels.
const TRACEFS: &str = "/sys/kernel/tracing";
/// The older place, under debugfs.
const TRACEFS_DEBUG: &str = "/sys/kernel/debug/tracing";

/// `name` as the kernel stores a task's `comm`: at most 15 bytes, NUL-padded to 16.
pub fn comm_bytes(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&name.as_bytes()[..end]);
    out
}

fn populated(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Mounts tracefs at `/sys/kernel/tracing` unless it (or the debugfs one) is there already.
pub fn ensure_tracefs() -> Result<(), TargetError> {
    if populated(Path::new(TRACEFS)) || populated(Path::new(TRACEFS_DEBUG)) {
        return Ok(());
    }
    nix::mount::mount(
        Some("nodev"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| TargetError::Tracefs {
        path: PathBuf::from(TRACEFS),
        detail: e.to_string(),
    })?;
    tracing::info!("mounted tracefs at {TRACEFS} for the exec, fork and exit tracepoints");
    Ok(())
}

/// The offsets the marking programs read, from the tracepoints' formats: `group_dead` of
/// `sched_process_exit` (kernels before 6.16 have none), `pid` and `newcomm` of `task_rename`.
pub fn mark_offsets() -> MarkOffsets {
    let format = |event: &str| {
        [TRACEFS, TRACEFS_DEBUG].iter().find_map(|root| {
            fs::read_to_string(Path::new(root).join("events").join(event).join("format")).ok()
        })
    };
    let exit = format("sched/sched_process_exit").unwrap_or_default();
    let rename = format("task/task_rename").unwrap_or_default();
    MarkOffsets {
        exit_group_dead: parse_field_offset(&exit, "group_dead", 1),
        rename_pid: parse_field_offset(&rename, "pid", 4),
        rename_comm: parse_field_offset(&rename, "newcomm[16]", 16),
    }
}

/// The offset of field `name` (as declared, e.g. `newcomm[16]`) of `size` bytes in a tracepoint
/// format text.
fn parse_field_offset(format: &str, name: &str, size: u32) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let (decl, rest) = line.strip_prefix("field:")?.split_once(';')?;
        if decl.split_whitespace().last()? != name {
            return None;
        }
        let off = rest.trim().strip_prefix("offset:")?.split(';').next()?;
        let off: u32 = off.trim().parse().ok()?;
        // The size must be what the kernel program reads.
        rest.contains(&format!("size:{size};")).then_some(off)
    })
}

#[cfg(test)]
mod tests;
