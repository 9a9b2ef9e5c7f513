pub mod reference;
pub mod registries;
pub mod unpack;
