//! ollama-egress: an eBPF egress monitor and blocker for local LLM servers.
//!
//! The library holds every piece of the daemon behind a seam of its own, so each can be tested
//! without the others: the policy compiler ([`policy`]), the event log ([`logstore`]).

pub mod logstore;
pub mod policy;
