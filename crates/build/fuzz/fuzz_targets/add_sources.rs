//! Fuzzes what ADD reads from untrusted places: the bytes of a context file
//! (archive detection in every compression, then unpacking into a scratch
//! directory, which must never write outside it) and the text of a URL and
//! a Last-Modified header. Nothing may panic.
#![no_main]

use kiln_build::{archive, fetch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = fetch::parse_http_date(&text);
    let _ = fetch::file_name(&text);
    let _ = fetch::parse_checksum(&text);
    let _ = archive::detect(data);
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let source = dir.path().join("source");
    if std::fs::write(&source, data).is_err() {
        return;
    }
    if !archive::is_archive(&source) {
        return;
    }
    if let Ok(entries) = archive::entry_paths(&source) {
        let _ = archive::parents_of(&entries);
    }
    let into = dir.path().join("a/b/into");
    if std::fs::create_dir_all(&into).is_ok() {
        let _ = archive::unpack(&source, &into, "/into");
    }
    // Everything the archive made is under `into`.
    for name in std::fs::read_dir(dir.path())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = name.file_name();
        assert!(
            name == "source" || name == "a",
            "wrote {name:?} beside the destination"
        );
    }
});
