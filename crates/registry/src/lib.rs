//! Registry client: pull, push and authentication against OCI distribution registries, verifying every byte against its digest.
