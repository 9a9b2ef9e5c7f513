//! Images for berth: references and registries config, pulls over the OCI
//! distribution protocol, the content store, safe layer unpacking, and the
//! image service the core exposes. See docs/dev/architecture.md.

mod apply;
pub mod config_edit;
pub mod content;
pub mod diff_tar;
pub mod fetch;
pub mod limits;
pub mod manifest;
pub mod progress;
pub mod reference;
pub mod registries;
pub mod service;
pub mod unpack;
pub mod upload;
