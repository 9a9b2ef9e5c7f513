//! Attach to a running container through its monitor (being written).
