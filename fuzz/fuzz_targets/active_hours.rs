#![no_main]
// The check is smart_joiner::fuzzing::active_hours (see there for what it asserts).
libfuzzer_sys::fuzz_target!(|data: &[u8]| smart_joiner::fuzzing::active_hours(data));
