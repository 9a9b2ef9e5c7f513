//! Docker's shell-like word processing: `$VAR`, `${VAR}`, `${VAR:-x}`,
//! `${VAR:+x}`, `${VAR-x}`, `${VAR+x}`, quotes and escapes.

use berth_errdefs::{Error, ErrorKind, Result};

/// Expands one word: variables substituted through `lookup` (None = unset),
/// quotes and escapes (`escape` is the Dockerfile's escape character)
/// removed. The result is one string even when it contains spaces.
pub fn expand(word: &str, escape: char, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let _ = (word, escape, lookup);
    Err(Error::new(
        ErrorKind::NotImplemented,
        "expand not implemented yet",
    ))
}

/// Expands like [`expand`], then splits into words at unquoted whitespace,
/// including whitespace that came from an unquoted variable's value (as
/// `EXPOSE $PORTS` needs).
pub fn expand_words(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>> {
    let _ = (word, escape, lookup);
    Err(Error::new(
        ErrorKind::NotImplemented,
        "expand not implemented yet",
    ))
}
