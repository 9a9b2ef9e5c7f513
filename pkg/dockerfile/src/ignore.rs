//! `.dockerignore`: which context paths a build leaves out, with the rules
//! of Docker's `patternmatcher` (Go `filepath.Match` plus `**`).

use berth_errdefs::{Error, Result};

use crate::glob::{clean_path, glob_match};

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
    tokens: Vec<Token>,
}

/// A pattern compiled for matching a whole path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`: one character other than `/`.
    AnyChar,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**` at the end: anything, `/` included.
    AnyRest,
    /// `**` (or `**/`) elsewhere: nothing, or anything ending in `/`.
    AnyDirs,
    /// `[...]`, kept as written for [`glob_match`].
    Class(String),
}

impl Ignore {
    /// Parses a `.dockerignore`: lines starting with `#` are comments, blank
    /// lines are skipped, surrounding whitespace is trimmed, `!` marks an
    /// exception, paths are cleaned like Go's `filepath.Clean` and a leading
    /// `/` dropped. A malformed pattern (bad `[` class, trailing `\`, a lone
    /// `!`) is an InvalidArgument error naming it.
    pub fn parse(text: &str) -> Result<Ignore> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for line in text.lines() {
            // Only a `#` in the first column makes a comment, as in Docker.
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
                if pattern.is_empty() {
                    return Err(Error::invalid(
                        "illegal exclusion pattern: \"!\" in .dockerignore",
                    ));
                }
            }
            let mut text = clean_path(pattern);
            if text.len() > 1 && text.starts_with('/') {
                text.remove(0);
            }
            if glob_match(&text, ".").is_err() {
                return Err(Error::invalid(format!(
                    "invalid .dockerignore pattern {line:?}: syntax error in pattern"
                )));
            }
            let tokens = compile(&text);
            patterns.push(Pattern {
                text,
                exception,
                tokens,
            });
        }
        Ok(Ignore { patterns })
    }

    /// Whether the context path `rel_path` (`/`-separated, relative to the
    /// context root) is left out of the build: the last pattern that matches
    /// it or one of its parent directories decides (an exception re-includes).
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let file = clean_path(rel_path.trim_start_matches('/'));
        let parents: Vec<&str> = match file.rfind('/') {
            Some(i) => file[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut excluded = false;
        for p in &self.patterns {
            // An exclusion cannot change an excluded path, nor an exception
            // an included one: skip the work, as Docker does.
            if p.exception != excluded {
                continue;
            }
            let hit =
                p.matches(&file) || (1..=parents.len()).any(|n| p.matches(&parents[..n].join("/")));
            if hit {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// Whether an exception pattern could re-include something under the
    /// directory `dir`, so a walker that found `dir` excluded must still
    /// descend into it (otherwise it may skip the whole directory).
    /// Conservative: true whenever it cannot rule it out.
    pub fn may_have_exceptions_under(&self, dir: &str) -> bool {
        let dir = clean_path(dir.trim_start_matches('/'));
        let dir_parts: Vec<&str> = if dir == "." {
            Vec::new()
        } else {
            dir.split('/').collect()
        };
        self.patterns
            .iter()
            .filter(|p| p.exception)
            .any(|p| could_match_under(&p.text, &dir_parts))
    }

    /// True when there are no patterns (nothing is excluded).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        let path: Vec<char> = path.chars().collect();
        match_tokens(&self.tokens, &path)
    }
}

/// Whether pattern `text` could match `dir` itself, a parent of it, or a
/// path under it: each of `dir`'s elements must match the pattern's element
/// at the same depth until the pattern reaches a `**` or either runs out.
fn could_match_under(text: &str, dir_parts: &[&str]) -> bool {
    let pattern_parts: Vec<&str> = text.split('/').collect();
    for (i, dir_part) in dir_parts.iter().enumerate() {
        let Some(pat) = pattern_parts.get(i) else {
            // The pattern matched a parent of `dir`: it covers all of it.
            return true;
        };
        if pat.contains("**") {
            return true;
        }
        if !glob_match(pat, dir_part).unwrap_or(true) {
            return false;
        }
    }
    true
}

/// Cuts a cleaned pattern into tokens (it was checked by `glob_match`).
fn compile(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                // `**/` is `**`.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                tokens.push(if i == chars.len() {
                    Token::AnyRest
                } else {
                    Token::AnyDirs
                });
                continue;
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::AnyChar),
            '\\' if i + 1 < chars.len() => {
                i += 1;
                tokens.push(Token::Literal(chars[i]));
            }
            '[' => {
                let end = class_end(&chars, i);
                tokens.push(Token::Class(chars[i..end].iter().collect()));
                i = end;
                continue;
            }
            c => tokens.push(Token::Literal(c)),
        }
        i += 1;
    }
    tokens
}

/// The index just past the `]` closing the class opened at `start`.
fn class_end(chars: &[char], start: usize) -> usize {
    let mut i = start + 1;
    if chars.get(i) == Some(&'^') {
        i += 1;
    }
    let mut first = true;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            ']' if !first => return i + 1,
            _ => {}
        }
        first = false;
        i += 1;
    }
    chars.len()
}

/// Matches the whole of `path` against `tokens`, backtracking at stars.
fn match_tokens(tokens: &[Token], path: &[char]) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return path.is_empty();
    };
    match token {
        Token::Literal(c) => path.first() == Some(c) && match_tokens(rest, &path[1..]),
        Token::AnyChar => path.first().is_some_and(|&c| c != '/') && match_tokens(rest, &path[1..]),
        Token::Class(class) => match path.first() {
            Some(&c) => {
                glob_match(class, &c.to_string()).unwrap_or(false) && match_tokens(rest, &path[1..])
            }
            None => false,
        },
        Token::Star => {
            let run = path.iter().take_while(|&&c| c != '/').count();
            (0..=run).any(|n| match_tokens(rest, &path[n..]))
        }
        Token::AnyRest => true,
        Token::AnyDirs => {
            match_tokens(rest, path)
                || (0..path.len())
                    .filter(|&i| path[i] == '/')
                    .any(|i| match_tokens(rest, &path[i + 1..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_exclude_like_docker() {
        // (.dockerignore, path, excluded)
        let cases = [
            ("*.log", "a.log", true),
            ("*.log", "dir/a.log", false),
            ("*/*.log", "dir/a.log", true),
            ("**/*.log", "a.log", true),
            ("**/*.log", "dir/sub/a.log", true),
            ("**/*.log", "dir/sub/a.txt", false),
            ("dir/**/x", "dir/x", true),
            ("dir/**/x", "dir/a/b/x", true),
            ("dir/**/x", "dirx", false),
            ("dir/**", "dir/a/b", true),
            ("**", "anything/at/all", true),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("\\*x", "*x", true),
            ("\\*x", "ax", false),
            // A parent directory's match excludes what is under it.
            ("build", "build/out/bin", true),
            ("build", "builder", false),
            ("b*", "build/out", true),
            // Cleaning: leading `/`, `./`, trailing `/`, `..`.
            ("/secret", "secret", true),
            ("./secret/", "secret/key", true),
            ("a/../secret", "secret", true),
            // Whitespace around patterns is trimmed; comments and blanks skipped.
            ("  spaced.txt  \n\n# secret\n", "spaced.txt", true),
            ("# secret", "# secret", false),
            ("# secret", "secret", false),
            // A `#` not in the first column is part of a pattern.
            (" #x", "#x", true),
            // Exceptions: the last match wins.
            ("*.md\n!README.md", "README.md", false),
            ("*.md\n!README.md", "CHANGES.md", true),
            ("!README.md\n*.md", "README.md", true),
            ("docs\n!docs/keep.md", "docs/keep.md", false),
            ("docs\n!docs/keep.md", "docs/other.md", true),
            ("docs\n!docs/keep\ndocs/keep/tmp", "docs/keep/tmp/x", true),
            ("docs\n!docs/keep\ndocs/keep/tmp", "docs/keep/y", false),
            ("**/*.tmp\n! keep.tmp", "keep.tmp", false),
            // Paths given to the matcher are cleaned too.
            ("secret", "./secret", true),
            ("secret", "/secret", true),
            ("", "anything", false),
        ];
        for (file, path, want) in cases {
            let ignore = Ignore::parse(file).unwrap();
            assert_eq!(
                ignore.is_excluded(path),
                want,
                ".dockerignore {file:?}, path {path:?}"
            );
        }
    }

    #[test]
    fn malformed_patterns_are_refused() {
        let cases = [
            ("[", "syntax error in pattern"),
            ("a[b-", "syntax error in pattern"),
            ("!", "illegal exclusion pattern"),
            ("x\n!  ", "illegal exclusion pattern"),
        ];
        for (file, want) in cases {
            let err = Ignore::parse(file).expect_err(file);
            assert_eq!(err.kind, berth_errdefs::ErrorKind::InvalidArgument);
            assert!(err.message.contains(want), "{file:?}: {}", err.message);
        }
    }

    #[test]
    fn walker_descends_only_where_an_exception_may_apply() {
        // (.dockerignore, excluded dir, may have exceptions under it)
        let cases = [
            ("docs", "docs", false),
            ("docs\n!docs/keep.md", "docs", true),
            ("docs\n!docs/keep.md", "other", false),
            ("docs\n!docs/a/keep.md", "docs/a", true),
            ("docs\n!docs/a/keep.md", "docs/b", false),
            ("docs\n!docs/*/keep.md", "docs/b", true),
            ("docs\n!**/keep.md", "docs/deep/er", true),
            ("docs\n!docs", "docs/sub", true),
            ("docs\n!d?cs/x", "docs", true),
        ];
        for (file, dir, want) in cases {
            let ignore = Ignore::parse(file).unwrap();
            assert_eq!(
                ignore.may_have_exceptions_under(dir),
                want,
                ".dockerignore {file:?}, dir {dir:?}"
            );
        }
    }

    #[test]
    fn empty_file_excludes_nothing() {
        let ignore = Ignore::parse("\n# only a comment\n").unwrap();
        assert!(ignore.is_empty());
        assert!(!ignore.is_excluded("Dockerfile"));
    }
}
