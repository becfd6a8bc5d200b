//! Object-path element escaping: round trips both ways and valid D-Bus paths. The assertions are in `fuzz_checks::check_path_element`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::check_path_element(data));
