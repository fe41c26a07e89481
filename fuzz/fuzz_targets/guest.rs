//! Arbitrary script and request bytes through the executor (`picloud_fuzz::guest`).
#![no_main]

// Starting the executor (compiling the guest on a cold cache) takes longer than one input may:
// done before the first input, outside libFuzzer's per-input timeout.
libfuzzer_sys::fuzz_target!(init: picloud_fuzz::guest::warm_up(), |data: &[u8]| {
    picloud_fuzz::guest::check(data);
});
