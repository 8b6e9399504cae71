//! Fuzzes image reference parsing: never panics, and whatever parses
//! re-parses from its full and familiar forms to the same reference.
#![no_main]

use kiln_image::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Reference::parse_named(text);
    if let Ok(reference) = Reference::parse(text) {
        assert_eq!(
            Reference::parse(&reference.to_string()).ok(),
            Some(reference.clone())
        );
        assert_eq!(
            Reference::parse(&reference.familiar()).ok(),
            Some(reference)
        );
    }
});
