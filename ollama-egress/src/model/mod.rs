//! The vocabulary of a connection decision, defined once and typed: what the kernel sends,
//! what the log stores, what the metrics label and what the command line accepts all speak
//! these types.
//!
//! - [`Verdict`], [`Mode`], [`Family`], [`Direction`], [`Action`], [`Hook`], [`Via`]: fieldless enums with one
//!   string form each (log, metrics, command line) and the conversions from the kernel's
//!   numbers (`ollama_egress_common`), fallible where the kernel could send anything.
//! - [`Proto`] / [`proto_name`]: the IP protocol of an event, number and name.
//! - [`rule`]: the name of a kernel rule id in events and metrics, the special rule names and
//!   the one fallback for an id no policy generation knows.
//! - [`CountryCode`]: an ISO 3166-1 alpha-2 code (defined in `ollama-egress-geo`, which cannot
//!   depend on this crate, and re-exported here).
//!
//! The schema of a log line that carries them is [`crate::logstore::EventRecord`].

mod kinds;
mod proto;
pub mod rule;

pub(crate) use kinds::OTHER_LABEL;
pub use kinds::{
    Action, Direction, Family, Hook, Mode, ParseValueError, UnknownKernelValue, Verdict, Via,
};
pub use ollama_egress_geo::{CountryCode, InvalidCountryCode};
pub use proto::{Proto, proto_name};

#[cfg(test)]
mod tests;
