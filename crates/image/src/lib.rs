//! Image model: OCI config, manifest and index, image references, docker-archive and OCI layout read/write. Knows nothing of how blobs are stored on disk.
