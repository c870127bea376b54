//! Bytes → the shared DNS answer walker, against a reference decoder on `hickory-proto`: the
//! walker never yields an address or a question name the reference does not see, never
//! panics, and misses nothing hickory decodes in a message it should accept.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ollama_egress_fuzz::dns::check(data);
});
