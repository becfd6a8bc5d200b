//! Session files (att_tokend::state_file::parse, and encode for the round trip). The assertions are in `fuzz_checks::check_state_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::check_state_file(data));
