//! `.dockerignore`: which context paths a build leaves out.

use berth_errdefs::Result;

/// Parsed `.dockerignore` patterns, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// Cleaned pattern, `/`-separated, no leading `/`.
    text: String,
    /// `!pattern`: re-includes what earlier patterns excluded.
    exception: bool,
}

impl Ignore {
    /// Parses a `.dockerignore`: `#` comment lines and blank lines skipped,
    /// surrounding whitespace trimmed, `!` marks an exception, paths cleaned
    /// like Go's `filepath.Clean` and a leading `/` dropped. A malformed
    /// pattern is an InvalidArgument error.
    pub fn parse(text: &str) -> Result<Ignore> {
        let _ = text;
        Ok(Ignore::default())
    }

    /// Whether the context path `rel_path` (`/`-separated, relative to the
    /// context root) is left out of the build.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let _ = rel_path;
        false
    }

    /// Whether an exception pattern could re-include something under the
    /// excluded directory `dir`, so a walker must still descend into it.
    pub fn may_have_exceptions_under(&self, dir: &str) -> bool {
        let _ = dir;
        self.patterns.iter().any(|p| p.exception)
    }

    /// True when there are no patterns (nothing is excluded).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}
