//! The policy tables in the kernel: two slots, each an IPv4 and an IPv6 LPM trie plus a
//! [`SlotConfig`]. A new policy is written into the inactive slot and switched in by one update
//! of `ACTIVE_SLOT`, so no packet is ever judged against a half-written policy.

use std::{
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, MapData, lpm_trie::Key},
};
use ipnet::{Ipv4Net, Ipv6Net};
use ollama_egress_common::{
    ACTIVE_SLOT_MAP, POLICY_V4_MAPS, POLICY_V6_MAPS, PolicyValue, SLOT_CONFIG_MAP, SlotConfig,
};

use ollama_egress_common::dns::{Binding, BindingKey, DnsConfig};

mod inbound;
mod tries;

use inbound::InboundTables;
use tries::{Contents, SlotTries, Trie, read_trie, sync_trie};

use super::LoaderError;
use super::domains::{DomainKey, DomainTables};
use crate::policy::DomainEntry;

/// A program that read the old `ACTIVE_SLOT` just before a flip may still be looking at the old
/// slot for the length of one program run (microseconds). The old slot is not rewritten until
/// this much time has passed since the flip.
const GRACE: Duration = Duration::from_millis(20);

/// Errors of writing a policy into the kernel.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The policy has more prefixes than the tries can hold.
    #[error(
        "the policy needs {needed} {family} prefixes but the kernel table holds at most {max}; raise --max-prefixes to at least {needed}"
    )]
    Capacity {
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// Prefixes in the policy.
        needed: usize,
        /// Capacity of the trie.
        max: u32,
    },
    /// The policy has more domain rules than the kernel's domain trie holds.
    #[error(
        "the policy has {needed} domain rules but the kernel's domain table holds at most {max}"
    )]
    DomainCapacity {
        /// Distinct domain patterns in the policy.
        needed: usize,
        /// Capacity of the trie.
        max: u32,
    },
    /// The policy has domain rules but the loaded kernel object cannot learn names.
    #[error(
        "the policy has {count} domain rules but the loaded eBPF object has no domain tables ({map}); rebuild ollama-egress"
    )]
    NoDomainTables {
        /// Domain rules in the policy.
        count: usize,
        /// The map that is missing.
        map: &'static str,
    },
    /// A map update failed; the active policy is unchanged.
    #[error("writing the policy into {map}: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// The kernel's answer.
        #[source]
        source: aya::maps::MapError,
    },
}

/// A compiled policy in the form the kernel tables take.
#[derive(Clone, Copy, Debug)]
pub struct TablePolicy<'a> {
    /// IPv4 prefixes.
    pub v4: &'a [(Ipv4Net, PolicyValue)],
    /// IPv6 prefixes.
    pub v6: &'a [(Ipv6Net, PolicyValue)],
    /// `ACTION_*` when nothing matches.
    pub default_action: u32,
    /// `MODE_*`.
    pub mode: u32,
    /// Domain trie entries.
    pub domains: &'a [DomainEntry],
    /// Inbound (source) IPv4 prefixes, the inbound default among them as `0.0.0.0/0`.
    pub inbound_v4: &'a [(Ipv4Net, PolicyValue)],
    /// Inbound IPv6 prefixes, the inbound default among them as `::/0`.
    pub inbound_v6: &'a [(Ipv6Net, PolicyValue)],
}

impl TablePolicy<'_> {
    /// Whether the policy fits tries of `max_v4` IPv4 and `max_v6` IPv6 prefixes; the one
    /// capacity check, made against the requested size before loading and against the
    /// kernel's tries before each write.
    pub fn fits(&self, max_v4: u32, max_v6: u32) -> Result<(), TableError> {
        for (family, needed, max) in [
            ("IPv4", self.v4.len(), max_v4),
            ("IPv6", self.v6.len(), max_v6),
            ("inbound IPv4", self.inbound_v4.len(), max_v4),
            ("inbound IPv6", self.inbound_v6.len(), max_v6),
        ] {
            if needed > max as usize {
                return Err(TableError::Capacity {
                    family,
                    needed,
                    max,
                });
            }
        }
        Ok(())
    }
}

/// Handles on the policy maps, and what userspace last wrote into each slot.
pub struct PolicyTables {
    v4: [Trie<4>; 2],
    v6: [Trie<16>; 2],
    /// Descriptors of the tries, for batched updates.
    fds_v4: [OwnedFd; 2],
    fds_v6: [OwnedFd; 2],
    active: Array<MapData, u32>,
    config: Array<MapData, SlotConfig>,
    contents_v4: [Contents<4>; 2],
    contents_v6: [Contents<16>; 2],
    max_v4: u32,
    max_v6: u32,
    active_slot: Option<u32>,
    generation: u32,
    flipped_at: Option<Instant>,
    /// The domain maps; `None` for an object without name learning.
    domains: Option<DomainTables>,
    /// The inbound tries.
    inbound: InboundTables,
}

pub(super) fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> LoaderError {
    move |source| LoaderError::Map {
        what: format!("opening {map}"),
        source,
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, LoaderError> {
    ebpf.take_map(name).ok_or_else(|| LoaderError::Missing {
        kind: "map",
        name: name.to_owned(),
    })
}

impl PolicyTables {
    /// Takes the policy maps out of a loaded object. When the maps were re-opened from pins,
    /// their contents, the active slot and the generation are read back, so the next
    /// [`apply`](Self::apply) writes the slot that is not in force and only what changed.
    pub(super) fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, LoaderError> {
        let SlotTries {
            v4,
            v6,
            fds_v4,
            fds_v6,
            contents_v4,
            contents_v6,
            max_v4,
            max_v6,
        } = SlotTries::take(ebpf, POLICY_V4_MAPS, POLICY_V6_MAPS)?;
        let active: Array<MapData, u32> =
            Array::try_from(take(ebpf, ACTIVE_SLOT_MAP)?).map_err(map_err(ACTIVE_SLOT_MAP))?;
        let config: Array<MapData, SlotConfig> =
            Array::try_from(take(ebpf, SLOT_CONFIG_MAP)?).map_err(map_err(SLOT_CONFIG_MAP))?;
        let read = |what: &'static str| {
            move |source| LoaderError::Map {
                what: format!("reading {what}"),
                source,
            }
        };
        let slot = active.get(&0, 0).map_err(read(ACTIVE_SLOT_MAP))? & 1;
        let cfg = config.get(&slot, 0).map_err(read(SLOT_CONFIG_MAP))?;
        let (active_slot, generation) = if cfg.valid != 0 {
            (Some(slot), cfg.generation)
        } else {
            (None, 0)
        };
        let domains = DomainTables::from_ebpf(ebpf)?;
        let inbound = InboundTables::from_ebpf(ebpf)?;
        Ok(Self {
            inbound,
            domains,
            v4,
            v6,
            fds_v4,
            fds_v6,
            active,
            config,
            contents_v4,
            contents_v6,
            max_v4,
            max_v6,
            active_slot,
            generation,
            flipped_at: None,
        })
    }

    /// What the kernel's table in force holds for `ip` (its longest matching prefix), as the
    /// programs see it; `None` when nothing matches or no policy is in force. IPv4-mapped
    /// addresses are looked up as IPv4, as the programs do.
    pub fn lookup(&self, ip: std::net::IpAddr) -> Result<Option<PolicyValue>, TableError> {
        let Some(slot) = self.active_slot else {
            return Ok(None);
        };
        let s = slot as usize;
        let res = match ip.to_canonical() {
            std::net::IpAddr::V4(v4) => self.v4[s].get(&Key::new(32, v4.octets()), 0),
            std::net::IpAddr::V6(v6) => self.v6[s].get(&Key::new(128, v6.octets()), 0),
        };
        match res {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(TableError::Map {
                map: if ip.to_canonical().is_ipv4() {
                    POLICY_V4_MAPS[s]
                } else {
                    POLICY_V6_MAPS[s]
                },
                source,
            }),
        }
    }

    /// What the inbound table in force holds for the source `ip`, as the programs see it;
    /// `None` when nothing matches or no policy is in force.
    pub fn lookup_inbound(&self, ip: std::net::IpAddr) -> Result<Option<PolicyValue>, TableError> {
        match self.active_slot {
            Some(slot) => self.inbound.lookup(slot as usize, ip),
            None => Ok(None),
        }
    }

    /// The domain rule of the policy in force for the canonical `name`, as the kernel's trie
    /// finds it; `None` when none matches, no policy is in force or the object has no domain
    /// tables.
    pub fn lookup_domain(&self, name: &str) -> Result<Option<PolicyValue>, TableError> {
        match (&self.domains, self.active_slot) {
            (Some(d), Some(slot)) => d.lookup(slot as usize, name),
            _ => Ok(None),
        }
    }

    /// The binding of `key` in the slot in force (`inactive`: in the other slot), whatever its
    /// generation.
    pub fn binding(&self, key: &BindingKey, inactive: bool) -> Result<Option<Binding>, TableError> {
        match (&self.domains, self.active_slot) {
            (Some(d), Some(slot)) => d.binding((slot ^ u32::from(inactive)) as usize, key),
            _ => Ok(None),
        }
    }

    /// Writes a binding into the slot that is not in force, as the kernel does when it learns
    /// an answer (for tests of the rebuild at a reload).
    pub fn put_inactive_binding(&mut self, key: &BindingKey, b: Binding) -> Result<(), TableError> {
        match (&mut self.domains, self.active_slot) {
            (Some(d), Some(slot)) => d.put_binding(1 - slot as usize, key, b),
            _ => Ok(()),
        }
    }

    /// Whether the loaded object learns names (has the domain maps).
    pub fn learns_names(&self) -> bool {
        self.domains.is_some()
    }

    /// Writes the settings of name learning. Call before the programs are attached; a no-op
    /// for an object without name learning.
    pub fn set_dns_config(&mut self, cfg: DnsConfig) -> Result<(), TableError> {
        match &mut self.domains {
            Some(d) => d.set_config(cfg),
            None => Ok(()),
        }
    }

    /// The generation of the policy in force (0 before the first [`apply`](Self::apply)).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Writes `policy` into the inactive slot and switches it in. On error the policy in force
    /// is untouched. Returns the new generation.
    pub fn apply(&mut self, policy: TablePolicy<'_>) -> Result<u32, TableError> {
        self.apply_announced(policy, |_| ())
    }

    /// [`apply`](Self::apply), telling `announce` the generation the slot is about to be
    /// written with, before anything is written: whoever names that generation's events (or
    /// records its rule names) knows it before the first such event can exist. The generation
    /// is computed here only, after the kernel's slot in force was read back.
    pub fn apply_announced(
        &mut self,
        policy: TablePolicy<'_>,
        announce: impl FnOnce(u32),
    ) -> Result<u32, TableError> {
        self.apply_with_bindings(policy, announce, |_| Vec::new())
    }

    /// [`apply_announced`](Self::apply_announced), with the bindings of the names learned so
    /// far: `bindings` is called with the new generation once the slot is complete and valid
    /// but not yet in force (from then on the kernel binds what it learns for the new
    /// generation in that slot too), and what it returns is merged into the slot's bindings
    /// before the switch.
    pub fn apply_with_bindings(
        &mut self,
        policy: TablePolicy<'_>,
        announce: impl FnOnce(u32),
        bindings: impl FnOnce(u32) -> Vec<(BindingKey, Binding)>,
    ) -> Result<u32, TableError> {
        policy.fits(self.max_v4, self.max_v6)?;
        policy.fits(self.inbound.max_v4, self.inbound.max_v6)?;
        match &self.domains {
            Some(d) => d.check_capacity(policy.domains.len())?,
            None if !policy.domains.is_empty() => {
                return Err(TableError::NoDomainTables {
                    count: policy.domains.len(),
                    map: ollama_egress_common::dns::DOMAIN_MAPS[0],
                });
            }
            None => {}
        }
        // The kernel's word on which slot is in force, not this process's memory of it: a slot
        // the programs read is never rewritten, whoever flipped it.
        self.sync_active()?;
        let slot = match self.active_slot {
            Some(s) => 1 - s,
            None => 1,
        };
        if let Some(at) = self.flipped_at {
            let since = at.elapsed();
            if since < GRACE {
                std::thread::sleep(GRACE - since);
            }
        }
        let s = slot as usize;
        // Mark the slot incomplete while it is rewritten (it is inactive, so nothing reads it;
        // this guards a reader that still races the previous flip). Generation 0: what the
        // kernel binds in this slot meanwhile is stale for every policy.
        let generation = self.generation.wrapping_add(1).max(1);
        announce(generation);
        self.set_config(slot, SlotConfig::default())?;
        let domain_rules = u32::try_from(policy.domains.len()).unwrap_or(u32::MAX);
        let mut cfg = SlotConfig {
            default_action: policy.default_action,
            mode: policy.mode,
            generation,
            valid: 0,
            domain_rules,
            reserved: 0,
        };
        // The domain trie first, then the slot's config names the new generation (still
        // incomplete: not judged with, not learned into).
        if let Some(d) = &mut self.domains {
            let entries: Vec<(DomainKey, PolicyValue)> = policy
                .domains
                .iter()
                .map(|e| (e.pattern.key(), e.value))
                .collect();
            d.write_rules(s, &entries)?;
            self.set_config(slot, cfg)?;
        }
        // In the compiler's (sorted) order: the trie is built fastest that way.
        let new_v4: Vec<((u8, [u8; 4]), PolicyValue)> = policy
            .v4
            .iter()
            .map(|(net, v)| ((net.prefix_len(), net.network().octets()), *v))
            .collect();
        let new_v6: Vec<((u8, [u8; 16]), PolicyValue)> = policy
            .v6
            .iter()
            .map(|(net, v)| ((net.prefix_len(), net.network().octets()), *v))
            .collect();
        sync_trie(
            &mut self.v4[s],
            &self.fds_v4[s],
            &mut self.contents_v4[s],
            &new_v4,
            POLICY_V4_MAPS[s],
        )?;
        sync_trie(
            &mut self.v6[s],
            &self.fds_v6[s],
            &mut self.contents_v6[s],
            &new_v6,
            POLICY_V6_MAPS[s],
        )?;
        self.inbound
            .write(s, policy.inbound_v4, policy.inbound_v6)?;
        // The slot is complete (its IP tries and domain trie belong together): valid, still
        // inactive. From here on the kernel binds the answers it learns in this slot for the
        // new generation, so nothing learned from now until the switch is lost.
        cfg.valid = 1;
        self.set_config(slot, cfg)?;
        // Then the names learned before, judged with the new rules, merged with what the kernel
        // bound meanwhile, before the switch.
        if let Some(d) = &mut self.domains {
            d.rebuild_bindings(s, generation, &bindings(generation))?;
        }
        self.active
            .set(0, slot, 0)
            .map_err(|source| TableError::Map {
                map: ACTIVE_SLOT_MAP,
                source,
            })?;
        self.active_slot = Some(slot);
        self.generation = generation;
        self.flipped_at = Some(Instant::now());
        Ok(generation)
    }
}

impl PolicyTables {
    /// Writes slot `slot`'s settings.
    fn set_config(&mut self, slot: u32, cfg: SlotConfig) -> Result<(), TableError> {
        self.config
            .set(slot, cfg, 0)
            .map_err(|source| TableError::Map {
                map: SLOT_CONFIG_MAP,
                source,
            })
    }

    /// Re-reads `ACTIVE_SLOT` and its [`SlotConfig`] from the kernel. When they differ from
    /// what this process last wrote (another writer, or the maps were changed by hand), the
    /// slot to be written next is read back too, so [`apply`](Self::apply) rewrites exactly
    /// what differs.
    fn sync_active(&mut self) -> Result<(), TableError> {
        let active = self.active.get(&0, 0).map_err(|source| TableError::Map {
            map: ACTIVE_SLOT_MAP,
            source,
        })? & 1;
        let cfg = self
            .config
            .get(&active, 0)
            .map_err(|source| TableError::Map {
                map: SLOT_CONFIG_MAP,
                source,
            })?;
        let kernel = (cfg.valid != 0).then_some(active);
        let same =
            kernel == self.active_slot && (kernel.is_none() || cfg.generation == self.generation);
        if same {
            return Ok(());
        }
        tracing::warn!(
            kernel_slot = ?kernel,
            kernel_generation = cfg.generation,
            expected_slot = ?self.active_slot,
            expected_generation = self.generation,
            "the policy slot in force is not the one this daemon wrote last; writing the other one"
        );
        self.active_slot = kernel;
        if kernel.is_some() {
            self.generation = self.generation.max(cfg.generation);
        }
        let next = match kernel {
            Some(s) => 1 - s,
            None => 1,
        } as usize;
        self.contents_v4[next] = read_trie(&self.v4[next]).map_err(|source| TableError::Map {
            map: POLICY_V4_MAPS[next],
            source,
        })?;
        self.contents_v6[next] = read_trie(&self.v6[next]).map_err(|source| TableError::Map {
            map: POLICY_V6_MAPS[next],
            source,
        })?;
        if let Some(d) = &mut self.domains {
            d.reread(next)?;
        }
        self.inbound.reread(next)?;
        Ok(())
    }
}
