#![no_main]
// The check is tgsim::fuzzing::packet (see there for what it asserts).
libfuzzer_sys::fuzz_target!(|data: &[u8]| tgsim::fuzzing::packet(data));
