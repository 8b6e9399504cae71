//! Fuzzes `apply_layer` with arbitrary bytes (plain, gzip or zstd tar streams): it must
//! never panic, and whatever it does, nothing outside the target directory may change.
//!
//! Run from crates/snapshot:
//! `cargo +nightly fuzz run apply_layer fuzz/corpus fuzz/seeds -- -max_total_time=60`
//! (seeds: small valid and hostile layers). The first input byte picks flatten or
//! overlay mode.

#![no_main]

use kiln_snapshot::{ApplyMode, ApplyOptions, apply_layer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode_byte, layer)) = data.split_first() else { return };
    let Ok(base) = tempfile::tempdir() else { return };
    let root = base.path().join("root");
    let outside = base.path().join("outside");
    if std::fs::create_dir(&root).is_err() || std::fs::create_dir(&outside).is_err() {
        return;
    }
    if std::fs::write(outside.join("secret"), b"secret").is_err() {
        return;
    }
    let opts = ApplyOptions {
        mode: if mode_byte & 1 == 0 { ApplyMode::Flatten } else { ApplyMode::Overlay },
        max_stream_bytes: 64 << 20,
        max_unpacked_bytes: 64 << 20,
        max_entries: 10_000,
        ..ApplyOptions::default()
    };
    let _ = apply_layer(layer, &root, &opts);
    let secret = std::fs::read(outside.join("secret")).unwrap_or_default();
    assert_eq!(secret, b"secret", "a file outside the target was changed");
    let mut outside_names: Vec<_> = std::fs::read_dir(&outside).map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect()).unwrap_or_default();
    outside_names.sort();
    assert_eq!(outside_names, ["secret"], "a file was created outside the target");
    let mut base_names: Vec<_> = std::fs::read_dir(base.path()).map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect()).unwrap_or_default();
    base_names.sort();
    assert_eq!(base_names, ["outside", "root"], "a file was created next to the target");
});
