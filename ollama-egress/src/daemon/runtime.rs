//! The policy runtime: the policy in force and everything that must follow it. It owns the
//! kernel's policy tables, the decoder's rule names per generation, the rule book kept next to
//! the log, and the inputs the policy is read from.
//!
//! Every write of a slot goes through [`PolicyRuntime::switch`]: the tables compute the next
//! generation (after reading back the slot in force) and announce it before anything is
//! written, so the decoder and the rule book know it before the first event it decides. What
//! else a slot is written with belongs here too.

use std::sync::{Arc, Mutex, PoisonError};

use ollama_egress_common::dns::{Binding, BindingKey};

use super::{DaemonError, PolicySource, rulebook::RuleBook, source::ReadPolicy, table_policy};
use crate::{
    loader::PolicyTables,
    model::Mode,
    pipeline::{DRAIN_INTERVAL, Decoder, GenerationInfo, boot_now_ns},
    policy::CompiledPolicy,
};

/// The policy in force and what follows it.
pub(super) struct PolicyRuntime {
    mode: Mode,
    tables: PolicyTables,
    decoder: Arc<Mutex<Decoder>>,
    source: PolicySource,
    /// Where each generation's rule names are kept for a later daemon (enforce mode).
    rulebook: Option<RuleBook>,
}

impl PolicyRuntime {
    /// Whether `compiled` fits tables of `max_prefixes` per family: checked before anything
    /// is loaded, with the size asked for (the tables check their own size on every write).
    pub(super) fn check_fits(
        compiled: &CompiledPolicy,
        mode: Mode,
        max_prefixes: u32,
    ) -> Result<(), DaemonError> {
        Ok(table_policy(compiled, mode).fits(max_prefixes, max_prefixes)?)
    }

    /// Writes the first policy and returns the runtime with its generation. The generations
    /// the rule book kept from earlier daemons are made known too: events the pinned programs
    /// decided while no daemon ran are named by the generation that decided them.
    pub(super) fn start(
        mode: Mode,
        mut tables: PolicyTables,
        decoder: Decoder,
        source: PolicySource,
        rulebook: Option<RuleBook>,
        compiled: &CompiledPolicy,
    ) -> Result<(Self, u32), DaemonError> {
        let decoder = Arc::new(Mutex::new(decoder));
        let announce = |generation| {
            if let Some(book) = &rulebook {
                book.record(generation, compiled, mode);
                let mut d = decoder.lock().unwrap_or_else(PoisonError::into_inner);
                for g in book.generations() {
                    if g.generation != generation {
                        d.push_generation(g);
                    }
                }
                drop(d);
            }
            push_generation(&decoder, generation, compiled, mode);
        };
        let generation =
            tables.apply_with_bindings(table_policy(compiled, mode), announce, |_| {
                learned_bindings(&decoder, compiled, false)
            })?;
        let runtime = Self {
            mode,
            tables,
            decoder,
            source,
            rulebook,
        };
        Ok((runtime, generation))
    }

    /// The decoder, shared with the event reader.
    pub(super) fn decoder(&self) -> Arc<Mutex<Decoder>> {
        Arc::clone(&self.decoder)
    }

    /// The inputs, for their change polling.
    pub(super) fn source_mut(&mut self) -> &mut PolicySource {
        &mut self.source
    }

    /// Re-reads the inputs (the geo databases with `reopen_geo`) and switches the new policy
    /// in. Returns the new generation and the compiled policy; on error nothing changed in the
    /// kernel and the policy in force stays.
    pub(super) fn reload(
        &mut self,
        reopen_geo: bool,
    ) -> Result<(u32, CompiledPolicy), DaemonError> {
        let ReadPolicy { compiled, geo } = self.source.read(reopen_geo)?;
        let generation = self.switch(&compiled)?;
        self.decoder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_geo(geo.clone());
        self.source.keep(geo);
        Ok((generation, compiled))
    }

    /// Writes `compiled` into the inactive slot and flips to it; the generation is announced
    /// to the decoder and the rule book first.
    fn switch(&mut self, compiled: &CompiledPolicy) -> Result<u32, DaemonError> {
        let Self {
            mode,
            tables,
            decoder,
            rulebook,
            ..
        } = self;
        let mode = *mode;
        let announce = |generation| {
            push_generation(decoder, generation, compiled, mode);
            if let Some(book) = rulebook {
                book.record(generation, compiled, mode);
            }
        };
        // The names learned so far, judged with the new rules: the kernel's bindings of the
        // old generation do not count for the new one.
        Ok(
            tables.apply_with_bindings(table_policy(compiled, mode), announce, |_| {
                learned_bindings(decoder, compiled, true)
            })?,
        )
    }
}

/// The bindings of the live names the decoder learned, judged with `compiled`'s domain rules.
/// With `settle` (a reload of a policy with domain rules), first lets the reader take in the
/// answers the kernel learned just before the new slot became valid (from then on the kernel
/// binds into that slot itself).
fn learned_bindings(
    decoder: &Mutex<Decoder>,
    compiled: &CompiledPolicy,
    settle: bool,
) -> Vec<(BindingKey, Binding)> {
    if settle && !compiled.domains.is_empty() {
        std::thread::sleep(2 * DRAIN_INTERVAL);
    }
    let d = decoder.lock().unwrap_or_else(PoisonError::into_inner);
    d.names().bindings(compiled, boot_now_ns())
}

/// Makes a policy generation known to the decoder.
fn push_generation(
    decoder: &Mutex<Decoder>,
    generation: u32,
    compiled: &CompiledPolicy,
    mode: Mode,
) {
    let rules = compiled.rules.iter().map(|r| r.id.clone()).collect();
    decoder
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push_generation(GenerationInfo {
            generation,
            rules: Arc::new(rules),
            mode,
        });
}
