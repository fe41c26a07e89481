//! Arbitrary JSON bodies on the API's write routes (`picloud_fuzz::api`).
#![no_main]

// Starting the executor (compiling the guest on a cold cache) takes longer than one input may:
// done before the first input, outside libFuzzer's per-input timeout.
libfuzzer_sys::fuzz_target!(init: picloud_fuzz::api::warm_up(), |data: &[u8]| {
    picloud_fuzz::api::check(data);
});
