//! Ring-buffer bytes → `ConnectEvent::from_bytes` → `Decoder::decode` → JSON line → back, then
//! written by `LogWriter` and found by a query for the record's own values. The bytes after
//! the 96-byte event choose the clock offset, the policy generations and the executable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ollama_egress_fuzz::event::check(data);
});
