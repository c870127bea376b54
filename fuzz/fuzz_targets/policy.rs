//! Policy text → `Policy::from_toml_str` → `compile`, with every invariant of the result
//! checked (see `ollama_egress_fuzz::policy`). Countries and ASNs expand through a fixed,
//! derived fake database; the verdicts of addresses around every network are compared with a
//! naive reference of the documented semantics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ollama_egress_fuzz::policy::{DerivedExpander, check_text, probes_from_bytes};

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 cannot be a policy file (`from_file` reads a String): the parser is fed
    // the lossy text, and the raw bytes double as probe addresses.
    let text = String::from_utf8_lossy(data);
    let _ = check_text(&text, &DerivedExpander, &probes_from_bytes(data));
});
