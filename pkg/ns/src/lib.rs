//! Pinned pod namespaces. (Being written.)
