//! The names side of a policy slot: the `DOMAINS_*` tries (domain rules keyed by the reversed
//! name), the `BINDINGS_*` maps (address → what the slot's domain rules say about it) and
//! `DNS_CONFIG`. [`super::tables::PolicyTables`] writes them as part of a slot, so a slot's IP
//! tries, domain trie and bindings always belong to the same policy.

use std::collections::{HashMap, HashSet};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap as BpfHashMap, MapData, MapError,
        lpm_trie::{Key, LpmTrie},
    },
};
use ollama_egress_common::{
    PolicyValue,
    dns::{
        BINDING_MAPS, Binding, BindingKey, DNS_CONFIG_MAP, DOMAIN_KEY_LEN, DOMAIN_MAPS, DnsConfig,
    },
};

use super::LoaderError;
use super::tables::TableError;

type DomainTrie = LpmTrie<MapData, [u8; DOMAIN_KEY_LEN], PolicyValue>;
type Bindings = BpfHashMap<MapData, BindingKey, Binding>;
/// A domain trie entry: prefix length in bits and key bytes.
pub type DomainKey = (u32, [u8; DOMAIN_KEY_LEN]);

/// `BPF_NOEXIST`: insert only when the key is absent.
const BPF_NOEXIST: u64 = 1;

/// Handles on the domain maps of both slots.
pub(super) struct DomainTables {
    tries: [DomainTrie; 2],
    bindings: [Bindings; 2],
    config: Array<MapData, DnsConfig>,
    contents: [HashMap<DomainKey, PolicyValue>; 2],
    max_rules: u32,
}

impl DomainTables {
    /// Takes the domain maps out of a loaded object; `None` when the object has none (a kernel
    /// object without name learning: policies with domain rules are then refused).
    pub(super) fn from_ebpf(ebpf: &mut Ebpf) -> Result<Option<Self>, LoaderError> {
        if ebpf.map(DOMAIN_MAPS[0]).is_none() {
            return Ok(None);
        }
        let open = |what: &'static str| {
            move |source| LoaderError::Map {
                what: format!("opening {what}"),
                source,
            }
        };
        let [d0, d1] = DOMAIN_MAPS;
        let [b0, b1] = BINDING_MAPS;
        let m0 = take(ebpf, d0)?;
        let max_rules = match &m0 {
            aya::maps::Map::LpmTrie(data) => {
                data.info()
                    .map(|i| i.max_entries())
                    .map_err(|source| LoaderError::Map {
                        what: format!("reading the size of {d0}"),
                        source,
                    })?
            }
            _ => {
                return Err(LoaderError::Missing {
                    kind: "LPM trie map",
                    name: d0.to_owned(),
                });
            }
        };
        let tries = [
            DomainTrie::try_from(m0).map_err(open(d0))?,
            DomainTrie::try_from(take(ebpf, d1)?).map_err(open(d1))?,
        ];
        let bindings = [
            Bindings::try_from(take(ebpf, b0)?).map_err(open(b0))?,
            Bindings::try_from(take(ebpf, b1)?).map_err(open(b1))?,
        ];
        let config = Array::try_from(take(ebpf, DNS_CONFIG_MAP)?).map_err(open(DNS_CONFIG_MAP))?;
        let read = |what: &'static str| {
            move |source| LoaderError::Map {
                what: format!("reading {what}"),
                source,
            }
        };
        let contents = [
            read_trie(&tries[0]).map_err(read(d0))?,
            read_trie(&tries[1]).map_err(read(d1))?,
        ];
        Ok(Some(Self {
            tries,
            bindings,
            config,
            contents,
            max_rules,
        }))
    }

    /// The most specific rule of slot `s` for the canonical `name`, as the kernel finds it.
    pub(super) fn lookup(&self, s: usize, name: &str) -> Result<Option<PolicyValue>, TableError> {
        let Some((bits, key)) = ollama_egress_common::dns::lookup_key(name.as_bytes()) else {
            return Ok(None);
        };
        match self.tries[s].get(&Key::new(bits, key), 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(TableError::Map {
                map: DOMAIN_MAPS[s],
                source,
            }),
        }
    }

    /// Slot `s`'s binding of `key`, whatever its generation.
    pub(super) fn binding(
        &self,
        s: usize,
        key: &BindingKey,
    ) -> Result<Option<Binding>, TableError> {
        match self.bindings[s].get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(TableError::Map {
                map: BINDING_MAPS[s],
                source,
            }),
        }
    }

    /// Writes a binding into slot `s` as the kernel would (for tests of the rebuild).
    pub(super) fn put_binding(
        &mut self,
        s: usize,
        key: &BindingKey,
        b: Binding,
    ) -> Result<(), TableError> {
        self.bindings[s]
            .insert(key, b, 0)
            .map_err(|source| TableError::Map {
                map: BINDING_MAPS[s],
                source,
            })
    }

    /// Writes the settings of name learning (before any program is attached).
    pub(super) fn set_config(&mut self, cfg: DnsConfig) -> Result<(), TableError> {
        self.config
            .set(0, cfg, 0)
            .map_err(|source| TableError::Map {
                map: DNS_CONFIG_MAP,
                source,
            })
    }

    /// Refuses a policy with more domain rules than the trie holds.
    pub(super) fn check_capacity(&self, needed: usize) -> Result<(), TableError> {
        if needed > self.max_rules as usize {
            return Err(TableError::DomainCapacity {
                needed,
                max: self.max_rules,
            });
        }
        Ok(())
    }

    /// Re-reads slot `s`'s trie (another writer changed the slots).
    pub(super) fn reread(&mut self, s: usize) -> Result<(), TableError> {
        self.contents[s] = read_trie(&self.tries[s]).map_err(|source| TableError::Map {
            map: DOMAIN_MAPS[s],
            source,
        })?;
        Ok(())
    }

    /// Makes slot `s`'s trie hold exactly `entries`: stale entries removed, new ones inserted.
    pub(super) fn write_rules(
        &mut self,
        s: usize,
        entries: &[(DomainKey, PolicyValue)],
    ) -> Result<(), TableError> {
        let map = DOMAIN_MAPS[s];
        let wanted: HashSet<DomainKey> = entries.iter().map(|(k, _)| *k).collect();
        let stale: Vec<DomainKey> = self.contents[s]
            .keys()
            .filter(|k| !wanted.contains(*k))
            .copied()
            .collect();
        for k in stale {
            match self.tries[s].remove(&Key::new(k.0, k.1)) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(TableError::Map { map, source }),
            }
            self.contents[s].remove(&k);
        }
        for (k, v) in entries {
            if self.contents[s].get(k) == Some(v) {
                continue;
            }
            self.tries[s]
                .insert(&Key::new(k.0, k.1), *v, 0)
                .map_err(|source| TableError::Map { map, source })?;
            self.contents[s].insert(*k, *v);
        }
        Ok(())
    }

    /// Rebuilds slot `s`'s bindings for `generation`: entries of other generations are removed,
    /// `bindings` are inserted; an entry the kernel wrote for this generation meanwhile (it
    /// learned the address while the slot was rebuilt) is merged with the rebuilt one.
    pub(super) fn rebuild_bindings(
        &mut self,
        s: usize,
        generation: u32,
        bindings: &[(BindingKey, Binding)],
    ) -> Result<(), TableError> {
        let map = BINDING_MAPS[s];
        let err = |source| TableError::Map { map, source };
        let stale: Vec<BindingKey> = self.bindings[s]
            .iter()
            .filter_map(|item| match item {
                Ok((k, v)) if v.generation != generation => Some(Ok(k)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()
            .map_err(err)?;
        for k in stale {
            match self.bindings[s].remove(&k) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(TableError::Map { map, source }),
            }
        }
        for (k, b) in bindings {
            let mut b = *b;
            b.generation = generation;
            match self.bindings[s].insert(k, b, BPF_NOEXIST) {
                Ok(()) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
                {
                    let old = match self.bindings[s].get(k, 0) {
                        Ok(old) => old,
                        // Evicted between the insert and the read: insert again.
                        Err(MapError::KeyNotFound) => Binding::default(),
                        Err(source) => return Err(TableError::Map { map, source }),
                    };
                    let merged = merge(old, b, generation);
                    self.bindings[s].insert(k, merged, 0).map_err(err)?;
                }
                Err(source) => return Err(TableError::Map { map, source }),
            }
        }
        Ok(())
    }
}

/// `old` and `new` combined for `generation`: the later expiry of each action and its rule. An
/// `old` of another generation counts as empty.
pub(crate) fn merge(old: Binding, new: Binding, generation: u32) -> Binding {
    let old = if old.generation == generation {
        old
    } else {
        Binding::default()
    };
    let (allow_until_ns, allow_rule) = if new.allow_until_ns > old.allow_until_ns {
        (new.allow_until_ns, new.allow_rule)
    } else {
        (old.allow_until_ns, old.allow_rule)
    };
    let (deny_until_ns, deny_rule) = if new.deny_until_ns > old.deny_until_ns {
        (new.deny_until_ns, new.deny_rule)
    } else {
        (old.deny_until_ns, old.deny_rule)
    };
    Binding {
        allow_until_ns,
        deny_until_ns,
        generation,
        allow_rule,
        deny_rule,
        reserved: 0,
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, LoaderError> {
    ebpf.take_map(name).ok_or_else(|| LoaderError::Missing {
        kind: "map",
        name: name.to_owned(),
    })
}

fn read_trie(trie: &DomainTrie) -> Result<HashMap<DomainKey, PolicyValue>, MapError> {
    let mut out = HashMap::new();
    for item in trie.iter() {
        let (k, v) = item?;
        out.insert((k.prefix_len(), k.data()), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
