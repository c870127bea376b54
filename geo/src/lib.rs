//! Geo lookups.
