//! Go `filepath.Match` glob matching and `filepath.Clean`, for `/`-separated
//! paths (the build context's paths as they appear in its tar).

use berth_errdefs::{Error, Result};

/// Whether `path` matches `pattern` with Go `filepath.Match` semantics:
/// `*` (any run of non-`/`), `?` (one non-`/`), `[...]` classes (`^` negates,
/// `a-z` ranges), `\` escapes the next character. `**` is just two `*`.
/// A malformed pattern is an InvalidArgument error (`syntax error in
/// pattern`), even when the path already failed to match before the bad part.
pub fn glob_match(pattern: &str, path: &str) -> Result<bool> {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = path.chars().collect();
    match_pattern(&pattern, &name).map_err(|BadPattern| bad_pattern())
}

/// Whether `s` has glob metacharacters (`*`, `?`, `[`, `\`), i.e. a COPY
/// source must be matched against the context rather than taken literally.
pub fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

/// Go's `filepath.Clean` for `/`-separated paths: repeated `/` collapsed,
/// `.` elements removed, `..` resolved lexically (dropped at the root,
/// kept at the front of a relative path), no trailing `/`; `""` is `.`.
pub fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

pub(crate) fn bad_pattern() -> Error {
    Error::invalid("syntax error in pattern")
}

/// A malformed pattern (unterminated class, trailing `\`, bad range).
#[derive(Debug)]
pub(crate) struct BadPattern;

/// `filepath.Match` over chars: the pattern is cut into chunks, each a
/// run of `*` followed by literal/`?`/class elements up to the next `*`.
fn match_pattern(mut pattern: &[char], mut name: &[char]) -> Result<bool, BadPattern> {
    'chunks: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest unless it crosses a `/`.
            return Ok(!name.contains(&'/'));
        }
        // Without a star the chunk must match here; with one, also at each
        // later offset up to the next `/` (a `*` never crosses one).
        if let Some(t) = match_chunk(chunk, name)? {
            if t.is_empty() || !pattern.is_empty() {
                name = t;
                continue;
            }
        }
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != '/' {
                if let Some(t) = match_chunk(chunk, &name[i + 1..])? {
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'chunks;
                }
                i += 1;
            }
        }
        // No match: still report a malformed rest of the pattern, as Go does.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, &[])?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off leading `*`s and the chunk up to the next unbracketed `*`.
fn scan_chunk(mut pattern: &[char]) -> (bool, &[char], &[char]) {
    let mut star = false;
    while pattern.first() == Some(&'*') {
        pattern = &pattern[1..];
        star = true;
    }
    let mut in_class = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            // Skip the escaped character (if any).
            '\\' if i + 1 < pattern.len() => i += 1,
            '[' => in_class = true,
            ']' => in_class = false,
            '*' if !in_class => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Matches `chunk` (no `*`) against the start of `s`; the rest of `s` on
/// success. Parses the whole chunk even after a mismatch so a malformed
/// chunk is always reported.
fn match_chunk<'a>(
    mut chunk: &[char],
    mut s: &'a [char],
) -> Result<Option<&'a [char]>, BadPattern> {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            '[' => {
                let r = if failed { '\0' } else { s[0] };
                if !failed {
                    s = &s[1..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = class_char(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&'-') {
                        let (h, rest) = class_char(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed {
                    if s[0] == '/' {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
            '\\' => {
                chunk = &chunk[1..];
                let Some(&lit) = chunk.first() else {
                    return Err(BadPattern);
                };
                if !failed {
                    if lit != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
            lit => {
                if !failed {
                    if lit != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// One character of a class (possibly `\`-escaped); `-` and `]` unescaped,
/// or the chunk ending, are malformed.
fn class_char(chunk: &[char]) -> Result<(char, &[char]), BadPattern> {
    match chunk {
        [] | ['-' | ']', ..] => Err(BadPattern),
        ['\\', c, rest @ ..] if !rest.is_empty() => Ok((*c, rest)),
        ['\\', ..] => Err(BadPattern),
        [c, rest @ ..] if !rest.is_empty() => Ok((*c, rest)),
        _ => Err(BadPattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_match_follows_go_filepath_match() {
        // (pattern, path, matches), from Go's filepath.Match rules.
        let cases = [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("a?b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "a", false),
            ("*x", "xxx", true),
            ("**", "a/b", false),
            ("**", "ab", true),
            ("*.txt", "notes.txt", true),
            ("*.txt", "dir/notes.txt", false),
            ("dir/*.txt", "dir/notes.txt", true),
            ("", "", true),
            ("", "a", false),
            // `]` outside a class is a literal.
            ("*x]", "x", false),
            ("*x]", "ax]", true),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(
                glob_match(pattern, path).unwrap(),
                want,
                "glob_match({pattern:?}, {path:?})"
            );
        }
    }

    #[test]
    fn glob_match_rejects_malformed_patterns() {
        let cases = [
            ("[]a]", "]"),
            ("[-]", "-"),
            ("[x-]", "x"),
            ("[x-]", "-"),
            ("[-x]", "a"),
            ("\\", "a"),
            ("[a-b-c]", "a"),
            ("[", "a"),
            ("[^", "a"),
            ("[^bc", "a"),
            ("a[", "a"),
            ("a[", "ab"),
            ("a[", "x"),
            ("a/b[", "x"),
        ];
        for (pattern, path) in cases {
            let err = glob_match(pattern, path).expect_err(pattern);
            assert_eq!(err.kind, berth_errdefs::ErrorKind::InvalidArgument);
            assert_eq!(err.message, "syntax error in pattern", "{pattern}");
        }
    }

    #[test]
    fn clean_path_follows_go_filepath_clean() {
        let cases = [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("abc", "abc"),
            ("abc/", "abc"),
            ("a//b", "a/b"),
            ("a/./b", "a/b"),
            ("a/b/..", "a"),
            ("a/../b", "b"),
            ("a/../..", ".."),
            ("../a", "../a"),
            ("../../a/../b", "../../b"),
            ("/", "/"),
            ("/..", "/"),
            ("/../a", "/a"),
            ("//a/b/", "/a/b"),
            ("./foo/bar/", "foo/bar"),
        ];
        for (path, want) in cases {
            assert_eq!(clean_path(path), want, "clean_path({path:?})");
        }
    }

    #[test]
    fn has_glob_chars_spots_metacharacters() {
        for (s, want) in [
            ("a.txt", false),
            ("*.txt", true),
            ("a?", true),
            ("[ab]", true),
            ("a\\b", true),
        ] {
            assert_eq!(has_glob_chars(s), want, "{s}");
        }
    }
}
