//! Fuzzes the archive reader (docker-archive / OCI layout tars, possibly
//! compressed) on arbitrary bytes: errors, never panics.
#![no_main]

use kiln_image::{MemoryBlobs, ReadOptions, read_archive};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut sink = MemoryBlobs::new();
    let _ = read_archive(data, &mut sink, &ReadOptions::default());
});
