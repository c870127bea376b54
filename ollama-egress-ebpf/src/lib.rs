//! Kernel programs of ollama-egress live in the `ollama-egress` binary of this crate (see
//! `main.rs`); this empty library lets the userspace crate name the crate as a build dependency.
#![no_std]
