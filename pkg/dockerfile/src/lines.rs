//! The first pass over a Dockerfile's text: parser directives, comments,
//! blank lines, continuation lines and heredoc bodies, giving one logical
//! line per instruction.

use berth_errdefs::{Error, Result};

use crate::ast::Heredoc;

/// An instruction's text with where it starts and the heredocs it opened.
#[derive(Debug)]
pub(crate) struct LogicalLine {
    /// 1-based number of its first line.
    pub line: usize,
    /// Continuation lines joined, trimmed.
    pub text: String,
    pub heredocs: Vec<Heredoc>,
}

/// The directives and the logical lines of a Dockerfile.
#[derive(Debug)]
pub(crate) struct Source {
    pub escape: char,
    pub syntax: Option<String>,
    pub notes: Vec<String>,
    pub lines: Vec<LogicalLine>,
}

pub(crate) fn parse_error(line: usize, message: impl std::fmt::Display) -> Error {
    Error::invalid(format!("dockerfile parse error line {line}: {message}"))
}

/// Splits `text` into logical lines.
pub(crate) fn split(text: &str) -> Result<Source> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let raw: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut source = Source {
        escape: '\\',
        syntax: None,
        notes: Vec::new(),
        lines: Vec::new(),
    };
    let mut i = read_directives(&raw, &mut source)?;
    let mut empty_continuations = false;
    while i < raw.len() {
        let start = i;
        let first = raw[i].trim_start();
        i += 1;
        if first.trim().is_empty() || first.starts_with('#') {
            continue;
        }
        let (mut text, mut continued) = strip_continuation(first, source.escape);
        let mut empty_continuation = false;
        while continued && i < raw.len() {
            let next = raw[i];
            i += 1;
            // Comment lines inside a continuation are dropped, as Docker does.
            if next.trim_start().starts_with('#') {
                continue;
            }
            if next.trim().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, more) = strip_continuation(next, source.escape);
            text.push_str(&part);
            continued = more;
        }
        let text = text.trim().to_string();
        if empty_continuation {
            source.notes.push(format!(
                "[WARNING]: Empty continuation line found in: {text}"
            ));
            empty_continuations = true;
        }
        let mut heredocs = Vec::new();
        for marker in heredoc_markers(&text, source.escape) {
            let (doc, next) = read_heredoc(&raw, i, marker, start + 1)?;
            heredocs.push(doc);
            i = next;
        }
        source.lines.push(LogicalLine {
            line: start + 1,
            text,
            heredocs,
        });
    }
    if empty_continuations {
        source.notes.push(
            "[WARNING]: Empty continuation lines will become errors in a future release.".into(),
        );
    }
    Ok(source)
}

/// Reads `# name=value` directives from the top; returns the index of the
/// first line that is not one. Any other line (a comment, a blank line, an
/// unknown directive, an instruction) ends the directives.
fn read_directives(raw: &[&str], source: &mut Source) -> Result<usize> {
    let mut seen: Vec<String> = Vec::new();
    for (i, line) in raw.iter().enumerate() {
        let Some((name, value)) = directive(line) else {
            return Ok(i);
        };
        let name = name.to_ascii_lowercase();
        if !["escape", "syntax", "check"].contains(&name.as_str()) {
            return Ok(i);
        }
        if seen.contains(&name) {
            return Err(parse_error(
                i + 1,
                format!("only one {name} parser directive can be used"),
            ));
        }
        match name.as_str() {
            "escape" => {
                source.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(parse_error(
                            i + 1,
                            format!("invalid escape token '{value}' does not match ` or \\"),
                        ))
                    }
                };
            }
            "syntax" => {
                source.notes.push(format!(
                    "[WARNING]: the syntax parser directive ({value}) is ignored: \
                     berth builds with its own classic builder"
                ));
                source.syntax = Some(value.to_string());
            }
            // `# check=` configures BuildKit's lint rules: nothing to do here.
            _ => {}
        }
        seen.push(name);
    }
    Ok(raw.len())
}

/// `# name = value` with a name of letters and digits.
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (name, value) = rest.split_once('=')?;
    let name = name.trim();
    let value = value.trim();
    let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric());
    (valid_name && !value.is_empty()).then_some((name, value))
}

/// Removes a trailing escape character (and the blanks after it); true if
/// there was one, i.e. the next line continues this one. An escaped escape
/// character (`\\` at the end) does not continue the line, as in Docker.
fn strip_continuation(line: &str, escape: char) -> (String, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    match trimmed.strip_suffix(escape) {
        Some(rest) if rest.is_empty() || !rest.ends_with(escape) => (rest.to_string(), true),
        _ => (line.to_string(), false),
    }
}

/// A `<<NAME` found on an instruction line.
#[derive(Debug)]
struct Marker {
    name: String,
    quoted: bool,
    strip_tabs: bool,
}

/// The heredoc markers of a RUN, COPY or ADD line in shell form, in order.
fn heredoc_markers(text: &str, escape: char) -> Vec<Marker> {
    let mut words = text.split_whitespace();
    let Some(keyword) = words.next() else {
        return Vec::new();
    };
    if !["RUN", "COPY", "ADD"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(keyword))
    {
        return Vec::new();
    }
    let args = crate::parser::skip_flags(text[keyword.len()..].trim_start());
    if crate::parser::json_array(args).is_some() {
        return Vec::new();
    }
    shell_words(args, escape)
        .iter()
        .filter_map(|w| marker(w))
        .collect()
}

/// `[digits]<<[-]NAME`, NAME possibly quoted in part or whole.
fn marker(word: &str) -> Option<Marker> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix("<<")?;
    if rest.starts_with('<') {
        return None; // `<<<` is a here-string
    }
    let (strip_tabs, raw) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let name: String = raw.chars().filter(|c| *c != '"' && *c != '\'').collect();
    if name.is_empty() || name.contains('<') {
        return None;
    }
    Some(Marker {
        quoted: name.len() != raw.len(),
        name,
        strip_tabs,
    })
}

/// Splits at whitespace outside quotes, keeping quotes and escapes in the
/// words (Docker's first split, before any expansion).
pub(crate) fn shell_words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if quote.is_none() && c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut word));
                in_word = false;
            }
            continue;
        }
        in_word = true;
        word.push(c);
        if c == escape && quote != Some('\'') {
            if let Some(n) = chars.next() {
                word.push(n);
            }
            continue;
        }
        match quote {
            None if c == '"' || c == '\'' => quote = Some(c),
            Some(q) if q == c => quote = None,
            _ => {}
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Reads a heredoc body from line index `from`: lines up to one that is
/// exactly the delimiter (after leading tabs for `<<-`). Returns the
/// heredoc and the index after its delimiter line.
fn read_heredoc(
    raw: &[&str],
    from: usize,
    marker: Marker,
    line: usize,
) -> Result<(Heredoc, usize)> {
    let mut content = String::new();
    for (i, body_line) in raw.iter().enumerate().skip(from) {
        let body_line = if marker.strip_tabs {
            body_line.trim_start_matches('\t')
        } else {
            body_line
        };
        if body_line == marker.name {
            let doc = Heredoc {
                name: marker.name,
                content,
                expand: !marker.quoted,
                strip_tabs: marker.strip_tabs,
            };
            return Ok((doc, i + 1));
        }
        content.push_str(body_line);
        content.push('\n');
    }
    Err(parse_error(line, "unterminated heredoc"))
}
