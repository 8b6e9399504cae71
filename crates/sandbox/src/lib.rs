//! Sandbox: runs one process in Linux namespaces on an overlayfs root (the RUN step and kiln run). Knows nothing of Dockerfiles or image formats.
