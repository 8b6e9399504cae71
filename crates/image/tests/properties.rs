//! Property tests: the reference and manifest parsers never panic on any input,
//! and normalising is idempotent (parse ∘ display = identity on parsed values).

mod common;

use std::sync::OnceLock;

use kiln_image::{
    MemoryBlobs, ReadOptions, Reference, WriteOptions, parse_config, parse_manifest, read_archive,
    write_docker_archive, write_oci_archive,
};
use proptest::prelude::*;

/// A valid docker-archive and OCI archive of the test image, built once.
fn valid_archives() -> &'static (Vec<u8>, Vec<u8>) {
    static ARCHIVES: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    ARCHIVES.get_or_init(|| {
        let image = common::make_test_image();
        let export = [image.export(&["fuzz/me:1"])];
        let docker =
            write_docker_archive(Vec::new(), &image.blobs, &export, &WriteOptions::default())
                .unwrap();
        let oci = write_oci_archive(Vec::new(), &image.blobs, &export).unwrap();
        (docker, oci)
    })
}

/// Strings built from the characters references are made of, so that a good
/// share of them parse and the interesting paths are exercised.
fn reference_like() -> impl Strategy<Value = String> {
    let component = "[a-z0-9]{1,6}([._-]{1,2}[a-z0-9]{1,4})?";
    let domain = prop_oneof![
        Just(String::new()),
        Just("localhost/".to_string()),
        Just("docker.io/".to_string()),
        Just("index.docker.io/".to_string()),
        "[a-z]{1,5}\\.[a-z]{2,3}(:[0-9]{1,5})?/",
        "[A-Z][a-z]{0,3}/",
        "\\[[0-9a-f:]{2,8}\\](:[0-9]{1,4})?/",
    ];
    let tag = prop_oneof![Just(String::new()), ":[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"];
    let digest = prop_oneof![
        3 => Just(String::new()),
        1 => "@sha256:[a-f0-9]{64}",
        1 => "@sha256:[a-fA-F0-9]{30,70}",
    ];
    (
        domain,
        proptest::collection::vec(component, 1..4),
        tag,
        digest,
    )
        .prop_map(|(domain, path, tag, digest)| format!("{domain}{}{tag}{digest}", path.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn reference_parse_never_panics(input in any::<String>()) {
        let _ = Reference::parse(&input);
        let _ = Reference::parse_named(&input);
    }

    #[test]
    fn reference_parse_never_panics_on_reference_alphabet(input in "[a-zA-Z0-9:/@._\\-\\[\\]]{0,80}") {
        let _ = Reference::parse(&input);
    }

    #[test]
    fn normalising_is_idempotent(input in reference_like()) {
        if let Ok(reference) = Reference::parse(&input) {
            let full = reference.to_string();
            let reparsed = Reference::parse(&full).expect("the full form of a parsed reference parses");
            prop_assert_eq!(&reparsed, &reference);
            prop_assert_eq!(reparsed.to_string(), full);
            let from_familiar = Reference::parse(&reference.familiar()).expect("the familiar form parses");
            prop_assert_eq!(&from_familiar, &reference);
            prop_assert!(reference.tag().is_some() || reference.digest().is_some());
        }
    }

    #[test]
    fn manifest_and_config_parsers_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_manifest(&bytes, None);
        let _ = parse_manifest(&bytes, Some("application/vnd.oci.image.index.v1+json"));
        let _ = parse_config(&bytes);
    }

    #[test]
    fn manifest_parser_never_panics_on_json_shaped_input(
        media_type in prop_oneof![
            Just("application/vnd.oci.image.manifest.v1+json"),
            Just("application/vnd.docker.distribution.manifest.v2+json"),
            Just("application/vnd.oci.image.index.v1+json"),
            Just("application/vnd.docker.distribution.manifest.list.v2+json"),
            Just("text/plain"),
        ],
        schema in 0u64..4,
        digest in "sha256:[a-f0-9]{0,70}",
        size in any::<i64>(),
        layer_type in "[a-z./+-]{0,40}",
    ) {
        let doc = format!(
            r#"{{"schemaVersion":{schema},"mediaType":"{media_type}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":{size}}},"layers":[{{"mediaType":"{layer_type}","digest":"{digest}","size":{size}}}],"manifests":[{{"mediaType":"{media_type}","digest":"{digest}","size":{size},"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let _ = parse_manifest(doc.as_bytes(), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn archive_reader_never_panics_on_corrupted_archives(
        use_oci in any::<bool>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let (docker, oci) = valid_archives();
        let mut bytes = if use_oci { oci.clone() } else { docker.clone() };
        for (position, value) in flips {
            let at = position.index(bytes.len());
            bytes[at] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        let mut sink = MemoryBlobs::new();
        let _ = read_archive(&bytes[..], &mut sink, &ReadOptions::default());
    }

    #[test]
    fn archive_reader_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut sink = MemoryBlobs::new();
        let _ = read_archive(&bytes[..], &mut sink, &ReadOptions::default());
    }
}
