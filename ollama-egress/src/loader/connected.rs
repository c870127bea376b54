//! `SOCK_CONNECTED`, the hash of the TCP connect verdicts the tables decided (see the kernel's
//! `verdict`): `connected_destroyed`, a BTF tracepoint on `tcp_destroy_sock`, deletes a
//! destroyed socket's entry, and connect4/connect6 use the hash only while it is attached
//! (`SOCK_CONNECTED_ON`); otherwise every verdict is socket storage, as on a kernel without
//! BTF or without the tracepoint.

use aya::programs::links::FdLink;
use ollama_egress_common::dns::SOCK_CONNECTED_ON_MAP;

use super::{Loaded, LoaderError, links::keep_link};

/// The program, and its pin name under `<pin-dir>/links`.
const CLEANUP_PROGRAM: &str = "connected_destroyed";
/// The tracepoint it is attached to.
const TRACEPOINT: &str = "tcp_destroy_sock";

impl Loaded {
    /// Attaches `connected_destroyed` (pinned in enforce mode, in place of an earlier daemon's
    /// link), then lets connect4/connect6 keep verdicts in `SOCK_CONNECTED`. When the kernel has
    /// no BTF or no such tracepoint, the hash stays off and every verdict goes to socket
    /// storage (a warning: enforcement is the same, a connect costs more).
    pub(super) fn attach_connected_cleanup(&mut self) -> Result<(), LoaderError> {
        let on = match self.cleanup_link() {
            Ok(()) => 1,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot attach {CLEANUP_PROGRAM} to {TRACEPOINT}: TCP connect verdicts are kept in socket storage (slower connects, the same enforcement)"
                );
                0
            }
        };
        let map = self.map_mut(SOCK_CONNECTED_ON_MAP)?;
        let merr = |source| LoaderError::Map {
            what: format!("writing {SOCK_CONNECTED_ON_MAP}"),
            source,
        };
        let mut flag: aya::maps::Array<_, u32> = aya::maps::Array::try_from(map).map_err(merr)?;
        flag.set(0, on, 0).map_err(merr)
    }

    /// `connected_destroyed` and its kernel id, when it is attached (for the state file, so
    /// that its cost shows with the others').
    pub fn cleanup_program_id(&self) -> Option<(String, u32)> {
        self.cleanup.as_ref()?;
        let id = self.program_id_of(CLEANUP_PROGRAM).ok()?;
        Some((CLEANUP_PROGRAM.to_owned(), id))
    }

    fn cleanup_link(&mut self) -> Result<(), LoaderError> {
        let what = format!("attaching {CLEANUP_PROGRAM}");
        let btf = aya::Btf::from_sys_fs().map_err(|e| LoaderError::Sys {
            what: "reading the kernel's BTF".to_owned(),
            source: std::io::Error::other(e),
        })?;
        let prog = self.program_mut_named(CLEANUP_PROGRAM)?;
        let attach = || -> Result<FdLink, aya::programs::ProgramError> {
            let p = <&mut aya::programs::BtfTracePoint>::try_from(prog)?;
            p.load(TRACEPOINT, &btf)?;
            let id = p.attach()?;
            Ok(p.take_link(id)?.into())
        };
        let link = attach().map_err(|source| LoaderError::Program { what, source })?;
        let pin = self
            .pins
            .as_ref()
            .map(|p| p.root().join("links").join(CLEANUP_PROGRAM));
        self.cleanup = Some(keep_link(link, pin.as_deref(), CLEANUP_PROGRAM)?);
        Ok(())
    }
}
