//! ollama-egress: an eBPF egress monitor and blocker for local LLM servers.
//!
//! Each piece of the daemon sits behind a seam of its own so it can be tested without the
//! others: the vocabulary of a decision ([`model`]), the default paths ([`defaults`]), the
//! policy compiler ([`policy`]), the policy and geo loader shared by the commands
//! ([`inputs`], reading through [`files`]), the kernel loader and tables ([`loader`]), the
//! event pipeline ([`pipeline`]), the event log ([`logstore`]), the metrics ([`metrics`]), the
//! target cgroup ([`targeting`]), the daemon that ties them together ([`daemon`]), the
//! exposure audit ([`audit`]) and the command line ([`cli`]).

pub mod audit;
pub mod cli;
pub mod daemon;
pub mod defaults;
pub mod files;
pub mod inputs;
pub mod loader;
pub mod logstore;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod policy;
pub mod suggest;
pub mod targeting;
pub mod terminal;
