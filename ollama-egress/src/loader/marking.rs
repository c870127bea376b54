//! The `--process` marking: the tracepoint programs that mark the target's tasks at exec,
//! rename and fork (and forget them at exit), the sock programs on the cgroup v2 root that mark
//! their sockets, and the maps they share with the daemon.

use std::{fs::File, path::Path};

use aya::programs::CgroupAttachMode;

use super::{
    Loaded, LoaderError,
    links::{fd_link, keep_link},
};

/// Maps of the `--process` marking (see the kernel's `exec` module), pinned with the others.
pub const MARK_MAPS: [&str; 4] = [
    "TARGET_CONFIG",
    "TARGET_NAME",
    "TARGET_TASKS",
    "TARGET_SOCKS",
];

/// Names of the pinned links of the `--process` marking programs (under `<pin-dir>/links/`).
pub const MARK_LINKS: [&str; 6] = [
    MARK_PROGRAMS[0].0,
    MARK_PROGRAMS[1].0,
    MARK_PROGRAMS[2].0,
    MARK_PROGRAMS[3].0,
    MARK_PROGRAMS[4].0,
    MARK_PROGRAMS[5].0,
];

/// The programs that mark `--process` targets: name, and tracepoint (category, name) or `None`
/// for the cgroup sock programs attached to the cgroup v2 root.
const MARK_PROGRAMS: [(&str, Option<(&str, &str)>); 6] = [
    ("mark_exec", Some(("sched", "sched_process_exec"))),
    ("mark_rename", Some(("task", "task_rename"))),
    ("mark_fork", Some(("sched", "sched_process_fork"))),
    ("mark_exit", Some(("sched", "sched_process_exit"))),
    ("target_sock_create", None),
    ("target_sock_release", None),
];

/// `TARGET_CONFIG` index: judge only marked tasks.
const CONFIG_MARKED_ONLY: u32 = 0;
/// `TARGET_CONFIG` index: offset of `group_dead` in the `sched_process_exit` record.
const CONFIG_EXIT_GROUP_DEAD: u32 = 1;
/// `TARGET_CONFIG` index: the `task_rename` record has the layout the kernel program reads.
const CONFIG_RENAME_LAYOUT: u32 = 2;
/// Offsets of `pid` and `newcomm` in the `task_rename` record the kernel program reads.
const RENAME_LAYOUT: (u32, u32) = (8, 28);

/// Offsets the marking programs read from tracepoint records, from the tracepoints' formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarkOffsets {
    /// `group_dead` of `sched_process_exit` (a `bool`), if the kernel has it.
    pub exit_group_dead: Option<u32>,
    /// `pid` of `task_rename`.
    pub rename_pid: Option<u32>,
    /// `newcomm` of `task_rename`.
    pub rename_comm: Option<u32>,
}

impl MarkOffsets {
    /// Whether `task_rename` is laid out as the kernel program reads it.
    pub fn rename_layout_known(&self) -> bool {
        (self.rename_pid, self.rename_comm) == (Some(RENAME_LAYOUT.0), Some(RENAME_LAYOUT.1))
    }
}

impl Loaded {
    /// `--process` mode, before [`Loaded::attach`] to the cgroup v2 root: tells the programs to
    /// judge only marked tasks and their sockets, and which name marks a task at exec.
    pub fn configure_marking(
        &mut self,
        comm: [u8; 16],
        offsets: MarkOffsets,
    ) -> Result<(), LoaderError> {
        let merr = |what: &str| {
            let what = what.to_owned();
            move |source| LoaderError::Map { what, source }
        };
        let mut names: aya::maps::Array<_, [u8; 16]> =
            aya::maps::Array::try_from(self.map_mut("TARGET_NAME")?)
                .map_err(merr("opening TARGET_NAME"))?;
        names.set(0, comm, 0).map_err(merr("writing TARGET_NAME"))?;
        let mut cfg: aya::maps::Array<_, u32> =
            aya::maps::Array::try_from(self.map_mut("TARGET_CONFIG")?)
                .map_err(merr("opening TARGET_CONFIG"))?;
        if !offsets.rename_layout_known() {
            tracing::warn!(
                ?offsets,
                "the task_rename tracepoint has another layout on this kernel: a process that takes the target's name after exec is marked by the daemon's scan only"
            );
        }
        for (index, value) in [
            (CONFIG_EXIT_GROUP_DEAD, offsets.exit_group_dead.unwrap_or(0)),
            (
                CONFIG_RENAME_LAYOUT,
                u32::from(offsets.rename_layout_known()),
            ),
        ] {
            cfg.set(index, value, 0)
                .map_err(merr("writing TARGET_CONFIG"))?;
        }
        cfg.set(CONFIG_MARKED_ONLY, 1, 0)
            .map_err(merr("writing TARGET_CONFIG"))?;
        Ok(())
    }

    /// `--process` mode: loads and attaches the marking programs (the exec, fork and exit
    /// tracepoints, and sock_create/sock_release on `root`), pinned in enforce mode so marking
    /// goes on without a daemon. Links pinned by an earlier daemon are replaced.
    pub fn attach_marking(&mut self, root: &Path) -> Result<(), LoaderError> {
        let dir = File::open(root).map_err(|source| LoaderError::Cgroup {
            path: root.display().to_string(),
            source,
        })?;
        for (name, tracepoint) in MARK_PROGRAMS {
            let what = format!("attaching {name}");
            let prog = self.program_mut_named(name)?;
            let link = match tracepoint {
                Some((category, event)) => fd_link(&what, || {
                    let p = <&mut aya::programs::TracePoint>::try_from(prog)?;
                    p.load()?;
                    let id = p.attach(category, event)?;
                    p.take_link(id)
                })?,
                None => fd_link(&what, || {
                    let p = <&mut aya::programs::CgroupSock>::try_from(prog)?;
                    p.load()?;
                    let id = p.attach(&dir, CgroupAttachMode::Single)?;
                    p.take_link(id)
                })?,
            };
            let pin = self
                .pins
                .as_ref()
                .map(|p| p.root().join("links").join(name));
            self.links.push(keep_link(link, pin.as_deref(), name)?);
        }
        Ok(())
    }

    /// The map of marked tasks, for marking the processes found by scanning `/proc`.
    pub fn take_marks(
        &mut self,
    ) -> Result<aya::maps::HashMap<aya::maps::MapData, u32, u32>, LoaderError> {
        self.take_hash("TARGET_TASKS")
    }

    /// The map of the marked tasks' sockets, for the sockets they had before they were marked.
    pub fn take_target_socks(
        &mut self,
    ) -> Result<aya::maps::HashMap<aya::maps::MapData, u64, u32>, LoaderError> {
        self.take_hash("TARGET_SOCKS")
    }

    fn take_hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &str,
    ) -> Result<aya::maps::HashMap<aya::maps::MapData, K, V>, LoaderError> {
        let map = self
            .ebpf
            .take_map(name)
            .ok_or_else(|| LoaderError::Missing {
                kind: "map",
                name: name.to_owned(),
            })?;
        aya::maps::HashMap::try_from(map).map_err(|source| LoaderError::Map {
            what: format!("opening {name}"),
            source,
        })
    }

    pub(super) fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map, LoaderError> {
        self.ebpf.map_mut(name).ok_or_else(|| LoaderError::Missing {
            kind: "map",
            name: name.to_owned(),
        })
    }
}
