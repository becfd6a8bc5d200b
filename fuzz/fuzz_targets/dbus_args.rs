//! D-Bus arguments: token names, device, ground and client ids, MFA codes. The assertions are in `fuzz_checks::check_dbus_args`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::check_dbus_args(data));
