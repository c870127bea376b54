//! `ollama-egress logs` queries over fuzzed log files, forwards and backwards (`--limit`),
//! compared with a naive reference that parses every line: the raw-text prefilter must never
//! drop a matching line. Input format: see `ollama_egress_fuzz::log`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ollama_egress_fuzz::log::check(data);
});
