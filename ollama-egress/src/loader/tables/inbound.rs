//! The inbound tries of both slots (`INBOUND_V4_*`, `INBOUND_V6_*`): the sources that may
//! connect to the target. Written into the inactive slot with its outbound tries, before the
//! slot is marked valid, so one flip of `ACTIVE_SLOT` switches both directions.

use std::{net::IpAddr, os::fd::OwnedFd};

use aya::{Ebpf, maps::lpm_trie::Key};
use ipnet::{Ipv4Net, Ipv6Net};
use ollama_egress_common::{INBOUND_V4_MAPS, INBOUND_V6_MAPS, PolicyValue};

use super::tries::{Contents, SlotTries, Trie, read_trie, sync_trie};
use super::{LoaderError, TableError};

/// Handles on the inbound tries and what userspace last wrote into each.
pub(super) struct InboundTables {
    v4: [Trie<4>; 2],
    v6: [Trie<16>; 2],
    fds_v4: [OwnedFd; 2],
    fds_v6: [OwnedFd; 2],
    contents_v4: [Contents<4>; 2],
    contents_v6: [Contents<16>; 2],
    /// Capacity of each IPv4 trie.
    pub(super) max_v4: u32,
    /// Capacity of each IPv6 trie.
    pub(super) max_v6: u32,
}

impl InboundTables {
    /// Takes the inbound tries out of a loaded object and reads back what they hold.
    pub(super) fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, LoaderError> {
        let t = SlotTries::take(ebpf, INBOUND_V4_MAPS, INBOUND_V6_MAPS)?;
        Ok(Self {
            v4: t.v4,
            v6: t.v6,
            fds_v4: t.fds_v4,
            fds_v6: t.fds_v6,
            contents_v4: t.contents_v4,
            contents_v6: t.contents_v6,
            max_v4: t.max_v4,
            max_v6: t.max_v6,
        })
    }

    /// Makes slot `s`'s tries hold exactly `v4` and `v6`.
    pub(super) fn write(
        &mut self,
        s: usize,
        v4: &[(Ipv4Net, PolicyValue)],
        v6: &[(Ipv6Net, PolicyValue)],
    ) -> Result<(), TableError> {
        let new_v4: Vec<((u8, [u8; 4]), PolicyValue)> = v4
            .iter()
            .map(|(net, v)| ((net.prefix_len(), net.network().octets()), *v))
            .collect();
        let new_v6: Vec<((u8, [u8; 16]), PolicyValue)> = v6
            .iter()
            .map(|(net, v)| ((net.prefix_len(), net.network().octets()), *v))
            .collect();
        sync_trie(
            &mut self.v4[s],
            &self.fds_v4[s],
            &mut self.contents_v4[s],
            &new_v4,
            INBOUND_V4_MAPS[s],
        )?;
        sync_trie(
            &mut self.v6[s],
            &self.fds_v6[s],
            &mut self.contents_v6[s],
            &new_v6,
            INBOUND_V6_MAPS[s],
        )
    }

    /// Reads slot `s`'s tries back from the kernel (another writer changed them).
    pub(super) fn reread(&mut self, s: usize) -> Result<(), TableError> {
        self.contents_v4[s] = read_trie(&self.v4[s]).map_err(|source| TableError::Map {
            map: INBOUND_V4_MAPS[s],
            source,
        })?;
        self.contents_v6[s] = read_trie(&self.v6[s]).map_err(|source| TableError::Map {
            map: INBOUND_V6_MAPS[s],
            source,
        })?;
        Ok(())
    }

    /// What slot `s`'s inbound tries hold for the source `ip` (its longest matching prefix),
    /// as the programs look it up (an IPv4-mapped address as IPv4).
    pub(super) fn lookup(&self, s: usize, ip: IpAddr) -> Result<Option<PolicyValue>, TableError> {
        let (res, map) = match ip.to_canonical() {
            IpAddr::V4(v4) => (
                self.v4[s].get(&Key::new(32, v4.octets()), 0),
                INBOUND_V4_MAPS[s],
            ),
            IpAddr::V6(v6) => (
                self.v6[s].get(&Key::new(128, v6.octets()), 0),
                INBOUND_V6_MAPS[s],
            ),
        };
        match res {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(TableError::Map { map, source }),
        }
    }
}
