//! Store: content-addressed blobs, metadata database, references, garbage collection and locks under the kiln root.
