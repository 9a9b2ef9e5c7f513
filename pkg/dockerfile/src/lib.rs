//! Dockerfiles and `.dockerignore` files for `docker build`, as dockerd's
//! classic builder reads them. Pure: no I/O, callers pass text in.
//!
//! - [`parse`]: a Dockerfile's text to [`Dockerfile`] (parser directives,
//!   continuations, comments, heredocs, every instruction typed, errors
//!   naming the line as dockerd does: `dockerfile parse error line 3: unknown
//!   instruction: FOO`).
//! - [`parse_trigger`]: a base image's ONBUILD trigger text to its instruction.
//! - [`expand`] / [`expand_words`] / [`expand_heredoc`]: Docker's shell-like
//!   variable substitution for the instructions that [`expands_variables`].
//! - [`Ignore`]: `.dockerignore` patterns (Go `filepath.Match` plus `**`, `!`
//!   exceptions, last match wins, a match on a parent directory excludes
//!   what is under it).
//! - [`glob_match`]: COPY/ADD source globs (Go `filepath.Match`).
//!
//! The Dockerfile and `.dockerignore` themselves are always sent by the
//! client even when `.dockerignore` names them: the builder reads both from
//! the context, then removes each from the context when
//! [`Ignore::is_excluded`] says so (as dockerd does), so `COPY . .` does not
//! copy them.

mod ast;
mod duration;
mod expand;
mod glob;
mod ignore;
mod lines;
mod parser;
mod shell_pattern;

pub use ast::{
    expands_variables, ArgDef, CmdLine, Command, Copy, Dockerfile, From, HealthCheckCmd,
    Healthcheck, Heredoc, Instruction, KeyValue, Run, Stage,
};
pub use expand::{expand, expand_heredoc, expand_words};
pub use glob::{clean_path, glob_match, has_glob_chars};
pub use ignore::Ignore;
pub use parser::{parse, parse_trigger};
