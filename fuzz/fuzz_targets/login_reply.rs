//! /login replies: the token grant, both MFA challenge shapes, OAuth2 errors, and login-flow's readers. The assertions are in `fuzz_checks::check_login_reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::check_login_reply(data));
