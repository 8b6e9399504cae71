//! Container runtime verbs: container state, the per-container monitor (logs, exit code, health checks) and published ports.
