//! CNI plugin delegation (being written).
