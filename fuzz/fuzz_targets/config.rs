//! The config parser (att_tokend::config::parse). The assertions are in `fuzz_checks::check_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::check_config(data));
