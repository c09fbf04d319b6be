#![no_main]
// The check is smart_joiner::fuzzing::folder_link (see there for what it asserts).
libfuzzer_sys::fuzz_target!(|data: &[u8]| smart_joiner::fuzzing::folder_link(data));
