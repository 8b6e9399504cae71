//! Snapshots: turns a directory diff (overlayfs upper dir) into a layer tar and applies layer tars to directories safely. Knows nothing of registries or Dockerfiles.
