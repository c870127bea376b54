//! Helpers shared by the integration tests.

pub mod spec_mmdb;
