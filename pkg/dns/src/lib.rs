//! An embedded DNS responder for Docker user networks, in the manner of
//! dockerd's 127.0.0.11 and netavark's aardvark-dns: containers on one
//! network reach each other by name and alias, and every other name is
//! forwarded to the host's resolvers.
//!
//! One [`Responder`] serves one network's [`Records`] over UDP and TCP;
//! the network code keeps the records up to date as containers join and
//! leave. The wire codec is written here (queries are small and the
//! responder answers only A, AAAA and PTR itself).

mod answer;
mod forward;
mod records;
mod resolv;
mod responder;
mod wire;

pub use records::Records;
pub use resolv::{host_upstreams, upstreams_from_resolv_conf};
pub use responder::{Options, Responder};

#[cfg(test)]
mod responder_tests;
