//! Structured policies: many overlapping IPv4, IPv6 and IPv4-mapped networks, countries and
//! ASNs with a database the input defines (including unknown entries and database errors),
//! written as TOML and checked like the `policy` target. Reaches the compiler's merge far more
//! often than free-form text does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ollama_egress_fuzz::policy::{StructuredPolicy, check_text};

fuzz_target!(|input: StructuredPolicy| {
    let _ = check_text(&input.text(), &input.expander(), &input.probes());
});
