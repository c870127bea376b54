//! Targets found by name (`--process`), marked in the kernel from their first instruction.
//!
//! - `sched/sched_process_exec`: a task that execs a program whose name (`comm`) is the target
//!   name gets its thread group marked in [`TARGET_TASKS`].
//! - `sched/sched_process_fork`: a new task inherits its parent's mark, and a task whose parent
//!   is not marked loses any mark its pid had before (a reused pid is never a target by
//!   accident).
//! - `task/task_rename`: a task that takes the target name later (`prctl(PR_SET_NAME)`) is marked.
//! - `sched/sched_process_exit`: the mark goes when the thread (or the whole group) ends.
//! - `cgroup/sock_create` and `cgroup/sock_release`: sockets made by a marked task are recorded
//!   by cookie in [`TARGET_SOCKS`], so the packet programs, which see the socket but not reliably
//!   the task, know whose packets they judge.
//!
//! In this mode the programs are attached to the cgroup v2 root and [`TARGET_CONFIG`] tells the
//! sock_addr and packet programs to judge only marked tasks and their sockets
//! ([`judges_task`], [`judges_socket`]). Everything else passes untouched and makes no event.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_socket_cookie},
    macros::{cgroup_sock, map, tracepoint},
    maps::{Array, HashMap},
    programs::{SockContext, TracePointContext},
};

/// `BPF_F_NO_PREALLOC`: entries are allocated when inserted.
const NO_PREALLOC: u32 = 1;
/// Thread groups (and threads) that can be marked at once.
const MAX_TASKS: u32 = 65_536;
/// Sockets of marked tasks that can be recorded at once.
const MAX_SOCKS: u32 = 65_536;

/// Index in [`TARGET_CONFIG`]: non-zero when only marked tasks are judged.
pub const CONFIG_MARKED_ONLY: u32 = 0;
/// Index in [`TARGET_CONFIG`]: offset of `group_dead` in the `sched_process_exit` record (0
/// when the kernel has none).
pub const CONFIG_EXIT_GROUP_DEAD: u32 = 1;

/// Index in [`TARGET_CONFIG`]: non-zero when userspace found the `task_rename` record laid out
/// as [`RENAME_PID`] and [`RENAME_NEWCOMM`] say.
pub const CONFIG_RENAME_LAYOUT: u32 = 2;

/// Offset of `pid` in the `task_rename` record.
const RENAME_PID: usize = 8;
/// Offset of `newcomm` in the `task_rename` record.
const RENAME_NEWCOMM: usize = 28;

/// Settings written by userspace before the programs are attached.
#[map(name = "TARGET_CONFIG")]
pub static TARGET_CONFIG: Array<u32> = Array::with_max_entries(4, 0);

/// The target's name as the kernel keeps a task's `comm`: at most 15 bytes, NUL-padded.
#[map(name = "TARGET_NAME")]
pub static TARGET_NAME: Array<[u8; 16]> = Array::with_max_entries(1, 0);

/// Marked thread groups (by tgid; threads by tid until they exit) → how they were marked.
#[map(name = "TARGET_TASKS")]
pub static TARGET_TASKS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TASKS, NO_PREALLOC);

/// Sockets of marked tasks, by socket cookie.
#[map(name = "TARGET_SOCKS")]
pub static TARGET_SOCKS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_SOCKS, NO_PREALLOC);

/// Marked at exec: the name matched.
const MARK_EXEC: u32 = 1;
/// Marked at fork: the parent was marked.
const MARK_FORK: u32 = 2;

/// Offset of `child_pid` in the `sched_process_fork` record.
const FORK_CHILD_PID: usize = 20;

#[inline(always)]
fn config(index: u32) -> u32 {
    TARGET_CONFIG.get(index).copied().unwrap_or(0)
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
fn current_marked() -> bool {
    // SAFETY: the value is only tested for presence.
    unsafe { TARGET_TASKS.get(current_tgid()) }.is_some()
}

/// A task that execs the target's program is marked.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn mark_exec(_ctx: TracePointContext) -> u32 {
    try_mark_exec();
    0
}

#[inline(always)]
fn try_mark_exec() {
    let Some(want) = TARGET_NAME.get(0) else {
        return;
    };
    if want[0] == 0 {
        return;
    }
    // The comm is already the new program's name at this tracepoint.
    let Ok(comm) = bpf_get_current_comm() else {
        return;
    };
    if same_name(&comm, want) {
        let _ = TARGET_TASKS.insert(current_tgid(), MARK_EXEC, 0);
    }
}

/// Whether `comm` holds the name `want` (NUL-padded): compared up to and including the first
/// NUL of `want`, since what follows a NUL in a tracepoint record is not cleared.
#[inline(always)]
fn same_name(comm: &[u8; 16], want: &[u8; 16]) -> bool {
    for i in 0..16 {
        if comm[i] != want[i] {
            return false;
        }
        if want[i] == 0 {
            return true;
        }
    }
    true
}

/// A task that takes the target's name after exec (`prctl(PR_SET_NAME)`, a write to
/// `/proc/PID/comm`) is marked too.
#[tracepoint(category = "task", name = "task_rename")]
pub fn mark_rename(ctx: TracePointContext) -> u32 {
    let _ = try_mark_rename(&ctx);
    0
}

#[inline(always)]
fn try_mark_rename(ctx: &TracePointContext) -> Result<(), i32> {
    if config(CONFIG_RENAME_LAYOUT) == 0 {
        return Ok(());
    }
    let Some(want) = TARGET_NAME.get(0) else {
        return Ok(());
    };
    if want[0] == 0 {
        return Ok(());
    }
    // SAFETY: userspace checked the record's layout against the tracepoint's format.
    let comm: [u8; 16] = unsafe { ctx.read_at(RENAME_NEWCOMM)? };
    if !same_name(&comm, want) {
        return Ok(());
    }
    // SAFETY: as above.
    let pid: i32 = unsafe { ctx.read_at(RENAME_PID)? };
    let pid_tgid = bpf_get_current_pid_tgid();
    // A task renaming itself marks its thread group; one renamed through /proc by another
    // task is marked by its pid (a process's main thread's pid is its tgid).
    let key = if pid as u32 == pid_tgid as u32 {
        (pid_tgid >> 32) as u32
    } else {
        pid as u32
    };
    TARGET_TASKS.insert(key, MARK_EXEC, 0)
}

/// A new task inherits its parent's mark; an unmarked parent's child has none.
#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn mark_fork(ctx: TracePointContext) -> u32 {
    let _ = try_mark_fork(&ctx);
    0
}

#[inline(always)]
fn try_mark_fork(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY: the offset is inside the tracepoint's record.
    let child: i32 = unsafe { ctx.read_at(FORK_CHILD_PID)? };
    let child = child as u32;
    if current_marked() {
        // Only fails when the map is full (it holds 65,536 marked tasks and threads, far above
        // any real Ollama); a tracepoint cannot refuse the fork, so the child then goes unmarked
        // until a scan of the daemon marks it.
        TARGET_TASKS.insert(child, MARK_FORK, 0)?;
    } else {
        let _ = TARGET_TASKS.remove(child);
    }
    Ok(())
}

/// The mark of a thread goes with it; a thread group's with its last thread.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn mark_exit(ctx: TracePointContext) -> u32 {
    let _ = try_mark_exit(&ctx);
    0
}

#[inline(always)]
fn try_mark_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    if tid != tgid {
        let _ = TARGET_TASKS.remove(tid);
        return Ok(());
    }
    let off = config(CONFIG_EXIT_GROUP_DEAD);
    if off != 0 && off < 64 {
        // SAFETY: userspace read the offset from the tracepoint's format.
        let dead: u8 = unsafe { ctx.read_at(off as usize)? };
        if dead == 0 {
            // The leader ends before other threads: the group lives on, and so does its mark.
            return Ok(());
        }
    }
    let _ = TARGET_TASKS.remove(tgid);
    Ok(())
}

/// Records the sockets a marked task makes. Refuses the socket (EPERM) when it cannot be
/// recorded, so none escapes the packet programs.
#[cgroup_sock(sock_create)]
pub fn target_sock_create(ctx: SockContext) -> i32 {
    if config(CONFIG_MARKED_ONLY) == 0 || !current_marked() {
        return 1;
    }
    if mark_socket(ctx.as_ptr()) { 1 } else { 0 }
}

/// Forgets a closed socket.
#[cgroup_sock(sock_release)]
pub fn target_sock_release(ctx: SockContext) -> i32 {
    if config(CONFIG_MARKED_ONLY) != 0 {
        // SAFETY: `bpf_get_socket_cookie` accepts a cgroup sock context.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        let _ = TARGET_SOCKS.remove(cookie);
    }
    1
}

#[inline(always)]
fn mark_socket(ctx: *mut core::ffi::c_void) -> bool {
    // SAFETY: `bpf_get_socket_cookie` accepts sock, sock_addr and skb contexts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx) };
    // SAFETY: the value is only tested for presence.
    if unsafe { TARGET_SOCKS.get(cookie) }.is_some() {
        return true;
    }
    TARGET_SOCKS.insert(cookie, MARK_EXEC, 0).is_ok()
}

/// For the sock_addr programs: whether this task's connection is theirs to judge. Always in
/// cgroup mode; in `--process` mode only for marked tasks, whose socket is then recorded for
/// the packet programs (a socket made before the task was marked included). `None` means the
/// socket of a marked task could not be recorded: refuse.
#[inline(always)]
pub fn judges_task<C: EbpfContext>(ctx: &C) -> Option<bool> {
    if config(CONFIG_MARKED_ONLY) == 0 {
        return Some(true);
    }
    if !current_marked() {
        return Some(false);
    }
    if mark_socket(ctx.as_ptr()) {
        Some(true)
    } else {
        None
    }
}

/// For the guards that run in the task's context (device open, setsockopt): whether the current
/// task is theirs to judge. Always in cgroup mode; in `--process` mode only marked tasks, so a
/// guard on the cgroup v2 root does not refuse the rest of the machine.
#[inline(always)]
pub fn judges_current() -> bool {
    config(CONFIG_MARKED_ONLY) == 0 || current_marked()
}

/// For the packet programs: whether this packet's socket is theirs to judge. Always in cgroup
/// mode; in `--process` mode only for sockets of marked tasks.
#[inline(always)]
pub fn judges_socket<C: EbpfContext>(ctx: &C) -> bool {
    if config(CONFIG_MARKED_ONLY) == 0 {
        return true;
    }
    // SAFETY: `bpf_get_socket_cookie` accepts an skb context (0 when there is no socket).
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is only tested for presence.
    cookie != 0 && unsafe { TARGET_SOCKS.get(cookie) }.is_some()
}
