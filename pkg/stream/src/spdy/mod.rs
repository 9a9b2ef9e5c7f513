//! SPDY/3.1 (being written).
