//! Dockerfile text to [`Dockerfile`].

use berth_errdefs::{Error, Result};

use crate::ast::Dockerfile;

/// Parses a Dockerfile. Errors are InvalidArgument, worded as dockerd's:
/// `dockerfile parse error line N: <what>`.
pub fn parse(text: &str) -> Result<Dockerfile> {
    let _ = text;
    Err(Error::new(
        berth_errdefs::ErrorKind::NotImplemented,
        "dockerfile parser not implemented yet",
    ))
}

/// Parses one ONBUILD trigger (an entry of a base image's `OnBuild` list)
/// as the instruction it runs, with `line` 0. Same rules as inside a
/// Dockerfile (FROM, MAINTAINER and ONBUILD are refused).
pub fn parse_trigger(text: &str) -> Result<crate::ast::Instruction> {
    let _ = text;
    Err(Error::new(
        berth_errdefs::ErrorKind::NotImplemented,
        "dockerfile parser not implemented yet",
    ))
}
