//! Arbitrary JSON bodies on the API's write routes (`picloud_fuzz::api`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    picloud_fuzz::api::check(data);
});
