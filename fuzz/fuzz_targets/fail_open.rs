#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llmsoup_fuzz::fail_open(data));
