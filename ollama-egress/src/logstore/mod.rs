//! The event log: JSON lines on disk, rotation, queries.
