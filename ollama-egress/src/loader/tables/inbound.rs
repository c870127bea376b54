//! The inbound tries of both slots (`INBOUND_V4_*`, `INBOUND_V6_*`): the sources that may
//! connect to the target. Written into the inactive slot with its outbound tries, before the
//! slot is marked valid, so one flip of `ACTIVE_SLOT` switches both directions.

use std::{net::IpAddr, os::fd::OwnedFd};

use aya::{Ebpf, maps::lpm_trie::Key};
use ipnet::{Ipv4Net, Ipv6Net};
use ollama_egress_common::{INBOUND_V4_MAPS, INBOUND_V6_MAPS, PolicyValue};

use super::tries::{Contents, Trie, read_trie, sync_trie, take_sized};
use super::{LoaderError, TableError, map_err};

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

fn read(what: &'static str) -> impl FnOnce(aya::maps::MapError) -> LoaderError {
    move |source| LoaderError::Map {
        what: format!("reading {what}"),
        source,
    }
}

impl InboundTables {
    /// Takes the inbound tries out of a loaded object and reads back what they hold.
    pub(super) fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, LoaderError> {
        let [a4, b4] = INBOUND_V4_MAPS;
        let [a6, b6] = INBOUND_V6_MAPS;
        let (ma4, max_v4, fa4) = take_sized(ebpf, a4)?;
        let (mb4, _, fb4) = take_sized(ebpf, b4)?;
        let (ma6, max_v6, fa6) = take_sized(ebpf, a6)?;
        let (mb6, _, fb6) = take_sized(ebpf, b6)?;
        let v4 = [
            Trie::<4>::try_from(ma4).map_err(map_err(a4))?,
            Trie::<4>::try_from(mb4).map_err(map_err(b4))?,
        ];
        let v6 = [
            Trie::<16>::try_from(ma6).map_err(map_err(a6))?,
            Trie::<16>::try_from(mb6).map_err(map_err(b6))?,
        ];
        let contents_v4 = [
            read_trie(&v4[0]).map_err(read(a4))?,
            read_trie(&v4[1]).map_err(read(b4))?,
        ];
        let contents_v6 = [
            read_trie(&v6[0]).map_err(read(a6))?,
            read_trie(&v6[1]).map_err(read(b6))?,
        ];
        Ok(Self {
            v4,
            v6,
            fds_v4: [fa4, fb4],
            fds_v6: [fa6, fb6],
            contents_v4,
            contents_v6,
            max_v4,
            max_v6,
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
