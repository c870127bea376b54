//! The tries of one policy slot as userspace handles them: taken out of the object with their
//! kernel size, read back, and made to hold exactly a new prefix set with the fewest writes.

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsFd as _, OwnedFd},
};

use aya::{
    Ebpf,
    maps::{
        MapData,
        lpm_trie::{Key, LpmTrie},
    },
};
use ollama_egress_common::PolicyValue;

use super::{LoaderError, TableError, map_err, take};

/// A policy trie of `N`-byte addresses.
pub(super) type Trie<const N: usize> = LpmTrie<MapData, [u8; N], PolicyValue>;

/// Prefixes written per `BPF_MAP_UPDATE_BATCH`.
const BATCH: usize = 8192;
/// What userspace last wrote into a trie: (prefix length, address) → value.
pub(super) type Contents<const N: usize> = HashMap<(u8, [u8; N]), PolicyValue>;

/// Takes a map and reads its capacity from the kernel (a re-opened pin keeps the size it was
/// created with).
pub(super) fn take_sized(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<(aya::maps::Map, u32, OwnedFd), LoaderError> {
    let map = take(ebpf, name)?;
    let aya::maps::Map::LpmTrie(data) = &map else {
        return Err(LoaderError::Missing {
            kind: "LPM trie map",
            name: name.to_owned(),
        });
    };
    let max = data
        .info()
        .map(|i| i.max_entries())
        .map_err(|source| LoaderError::Map {
            what: format!("reading the size of {name}"),
            source,
        })?;
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| LoaderError::Sys {
            what: format!("duplicating the descriptor of {name}"),
            source,
        })?;
    Ok((map, max, fd))
}

/// The current contents of a trie.
pub(super) fn read_trie<const N: usize>(
    trie: &Trie<N>,
) -> Result<Contents<N>, aya::maps::MapError> {
    let mut out = Contents::new();
    for item in trie.iter() {
        let (k, v) = item?;
        out.insert((k.prefix_len() as u8, k.data()), v);
    }
    Ok(out)
}

/// Makes `trie` hold exactly `new`: removes what is stale, writes what changed, in batches.
pub(super) fn sync_trie<const N: usize>(
    trie: &mut Trie<N>,
    fd: &OwnedFd,
    contents: &mut Contents<N>,
    new: &[((u8, [u8; N]), PolicyValue)],
    map: &'static str,
) -> Result<(), TableError> {
    let wanted: HashSet<(u8, [u8; N])> = new.iter().map(|(k, _)| *k).collect();
    let stale: Vec<(u8, [u8; N])> = contents
        .keys()
        .filter(|k| !wanted.contains(*k))
        .copied()
        .collect();
    for k in stale {
        let key = Key::new(u32::from(k.0), k.1);
        match trie.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(source) => return Err(TableError::Map { map, source }),
        }
        contents.remove(&k);
    }
    let changed: Vec<((u8, [u8; N]), PolicyValue)> = new
        .iter()
        .filter(|(k, v)| contents.get(k) != Some(v))
        .copied()
        .collect();
    for chunk in changed.chunks(BATCH) {
        if let Err(source) = write_batch::<N>(fd, chunk) {
            // Kernels without batched LPM updates: one syscall per prefix.
            tracing::debug!(map, error = %source, "batched update refused; writing one by one");
            for (k, v) in chunk {
                let key = Key::new(u32::from(k.0), k.1);
                trie.insert(&key, *v, 0)
                    .map_err(|source| TableError::Map { map, source })?;
            }
        }
        contents.extend(chunk.iter().copied());
    }
    Ok(())
}

/// One `BPF_MAP_UPDATE_BATCH` of LPM keys (`u32` prefix length, then the address) and values.
fn write_batch<const N: usize>(
    fd: &OwnedFd,
    chunk: &[((u8, [u8; N]), PolicyValue)],
) -> std::io::Result<()> {
    let mut keys = Vec::with_capacity(chunk.len() * (4 + N));
    let mut values = Vec::with_capacity(chunk.len() * 8);
    for ((len, addr), v) in chunk {
        keys.extend_from_slice(&u32::from(*len).to_ne_bytes());
        keys.extend_from_slice(addr);
        values.extend_from_slice(&v.action.to_ne_bytes());
        values.extend_from_slice(&v.rule_id.to_ne_bytes());
    }
    let written = super::super::sys::map_update_batch(fd.as_fd(), &keys, &values, chunk.len())?;
    if written != chunk.len() {
        return Err(std::io::Error::other(format!(
            "the kernel wrote {written} of {} prefixes",
            chunk.len()
        )));
    }
    Ok(())
}

/// The IPv4 and IPv6 tries of both slots, as taken out of the object and read back.
pub(super) struct SlotTries {
    pub(super) v4: [Trie<4>; 2],
    pub(super) v6: [Trie<16>; 2],
    pub(super) fds_v4: [OwnedFd; 2],
    pub(super) fds_v6: [OwnedFd; 2],
    pub(super) contents_v4: [Contents<4>; 2],
    pub(super) contents_v6: [Contents<16>; 2],
    /// Capacity of each IPv4 trie.
    pub(super) max_v4: u32,
    /// Capacity of each IPv6 trie.
    pub(super) max_v6: u32,
}

impl SlotTries {
    /// Takes the slot tries named `[a4, b4]` and `[a6, b6]` and reads back what they hold.
    pub(super) fn take(
        ebpf: &mut Ebpf,
        [a4, b4]: [&'static str; 2],
        [a6, b6]: [&'static str; 2],
    ) -> Result<Self, LoaderError> {
        let read = |what: &'static str| {
            move |source| LoaderError::Map {
                what: format!("reading {what}"),
                source,
            }
        };
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
}
