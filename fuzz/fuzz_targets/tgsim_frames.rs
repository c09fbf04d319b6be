#![no_main]
// The check is tgsim::fuzzing::frames (see there for what it asserts).
libfuzzer_sys::fuzz_target!(|data: &[u8]| tgsim::fuzzing::frames(data));
