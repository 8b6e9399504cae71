//! Fuzzes manifest, index and config parsing on arbitrary bytes: no panic, and
//! a parsed document keeps exactly the bytes it came from.
#![no_main]

use kiln_image::{Manifest, Platform, parse_config, parse_manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = parse_manifest(data, None) {
        assert_eq!(manifest.bytes(), data);
        if let Manifest::Index(index) = &manifest {
            let _ = index.select(&Platform::host());
        }
    }
    if let Ok(config) = parse_config(data) {
        let _ = config.diff_ids();
    }
});
