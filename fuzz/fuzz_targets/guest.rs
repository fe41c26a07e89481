//! Arbitrary script and request bytes through the executor (`picloud_fuzz::guest`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    picloud_fuzz::guest::check(data);
});
