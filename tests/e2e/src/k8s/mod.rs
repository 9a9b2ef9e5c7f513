//! An independent Kubernetes streaming client for tests (being written).
