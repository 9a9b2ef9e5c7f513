//! The netavark backend (being written).
