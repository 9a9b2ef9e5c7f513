//! Docker's shell-like word processing: `$VAR`, `${VAR}`, `${VAR:-x}`,
//! `${VAR:+x}`, `${VAR-x}`, `${VAR+x}`, `${VAR:?x}`, `${VAR?x}`,
//! `${VAR#p}`, `${VAR##p}`, `${VAR%p}`, `${VAR%%p}`, `${VAR/p/r}`,
//! `${VAR//p/r}`, quotes and escapes. No commands, globbing or arithmetic: only what dockerd's
//! builder does to the words of ADD, COPY, ENV, FROM and the like.

use berth_errdefs::{Error, Result};

use crate::shell_pattern::ShellPattern;

/// Expands one word: variables substituted through `lookup` (None = unset),
/// quotes and escapes (`escape` is the Dockerfile's escape character)
/// removed. The result is one string even when it contains spaces.
///
/// Single quotes keep everything literal; in double quotes `$` still
/// expands and the escape character only escapes `"`, `$` and itself.
pub fn expand(word: &str, escape: char, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    Ok(Lexer::new(word, escape, lookup).run()?.0)
}

/// Expands like [`expand`], then splits into words at unquoted whitespace,
/// including whitespace that came from an unquoted variable's value (as
/// `EXPOSE $PORTS` needs). Empty words are dropped.
pub fn expand_words(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>> {
    Ok(Lexer::new(word, escape, lookup).run()?.1.finish())
}

/// Expands the body of an unquoted heredoc (`COPY <<EOF`) as a shell does
/// a here-document: variables are substituted, quotes are ordinary
/// characters, and the escape character only escapes `$`, itself and a
/// newline (removing both); elsewhere it stays.
pub fn expand_heredoc(
    content: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String> {
    let mut lexer = Lexer::new(content, escape, lookup);
    lexer.heredoc = true;
    Ok(lexer.run()?.0)
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Here-document rules: quotes literal, escapes only before `$`,
    /// the escape character and newline.
    heredoc: bool,
    /// Keep escape characters in the result (inside `${NAME#...}` patterns).
    raw_escapes: bool,
}

/// Words being collected: whitespace ends a word unless it was quoted or
/// escaped ("raw").
#[derive(Default)]
struct Words {
    done: Vec<String>,
    current: String,
}

impl Words {
    /// Unquoted text (literal characters or a variable's value): split.
    fn add_split(&mut self, s: &str) {
        for c in s.chars() {
            if c.is_whitespace() {
                self.end_word();
            } else {
                self.current.push(c);
            }
        }
    }

    /// Quoted or escaped text: part of the current word as is.
    fn add_raw(&mut self, s: &str) {
        self.current.push_str(s);
    }

    fn end_word(&mut self) {
        if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.end_word();
        self.done
    }
}

fn syntax(message: impl Into<String>) -> Error {
    Error::invalid(message)
}

impl<'a> Lexer<'a> {
    fn new(word: &str, escape: char, lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Lexer {
            chars: word.chars().collect(),
            pos: 0,
            escape,
            lookup,
            heredoc: false,
            raw_escapes: false,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn run(&mut self) -> Result<(String, Words)> {
        self.process(None)
    }

    /// Processes up to `stop` (consumed) or the end; an unterminated `stop`
    /// is an error.
    fn process(&mut self, stop: Option<char>) -> Result<(String, Words)> {
        let mut result = String::new();
        let mut words = Words::default();
        loop {
            let Some(c) = self.peek() else {
                return match stop {
                    Some('/') => Err(syntax("syntax error: missing '/' in ${}")),
                    Some(_) => Err(syntax("syntax error: missing '}'")),
                    None => Ok((result, words)),
                };
            };
            if Some(c) == stop {
                self.pos += 1;
                return Ok((result, words));
            }
            match c {
                c if self.heredoc && c == self.escape => {
                    self.pos += 1;
                    match self.peek() {
                        Some('\n') => self.pos += 1,
                        Some(n) if n == '$' || n == self.escape => {
                            self.pos += 1;
                            result.push(n);
                        }
                        _ => result.push(c),
                    }
                }
                '\'' | '"' if self.heredoc => {
                    self.pos += 1;
                    result.push(c);
                }
                '\'' => {
                    let s = self.single_quoted()?;
                    words.add_raw(&s);
                    result.push_str(&s);
                }
                '"' => {
                    let s = self.double_quoted()?;
                    words.add_raw(&s);
                    result.push_str(&s);
                }
                '$' => {
                    let s = self.dollar()?;
                    words.add_split(&s);
                    result.push_str(&s);
                }
                c if c == self.escape => {
                    self.pos += 1;
                    if self.raw_escapes {
                        result.push(c);
                    }
                    // A trailing escape character is dropped.
                    if let Some(e) = self.next() {
                        words.add_raw(&e.to_string());
                        result.push(e);
                    }
                }
                c => {
                    self.pos += 1;
                    words.add_split(&c.to_string());
                    result.push(c);
                }
            }
        }
    }

    /// `'...'`: everything literal up to the next `'`.
    fn single_quoted(&mut self) -> Result<String> {
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.next() {
                Some('\'') => return Ok(s),
                Some(c) => s.push(c),
                None => {
                    return Err(syntax(
                        "unexpected end of statement while looking for matching single-quote",
                    ))
                }
            }
        }
    }

    /// `"..."`: `$` expands; the escape character escapes `"`, `$` and itself
    /// only (otherwise it stays).
    fn double_quoted(&mut self) -> Result<String> {
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(syntax(
                        "unexpected end of statement while looking for matching double-quote",
                    ))
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some('$') => s.push_str(&self.dollar()?),
                Some(c) => {
                    self.pos += 1;
                    if c == self.escape {
                        match self.peek() {
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.pos += 1;
                                s.push(n);
                            }
                            _ => s.push(c),
                        }
                    } else {
                        s.push(c);
                    }
                }
            }
        }
    }

    /// `$NAME`, `${NAME}` or `${NAME<modifier>word}`; a `$` not followed by
    /// a name is literal.
    fn dollar(&mut self) -> Result<String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.value(&name).unwrap_or_default());
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(syntax("syntax error: missing '}'")),
            Some('{' | '}' | ':') => return Err(syntax("syntax error: bad substitution")),
            _ => {}
        }
        let name = self.name();
        let Some(c) = self.next() else {
            return Err(syntax("syntax error: missing '}'"));
        };
        match c {
            '}' => Ok(self.value(&name).unwrap_or_default()),
            ':' => match self.next() {
                Some(m @ ('-' | '+' | '?')) => {
                    let value = self.value(&name);
                    self.modifier(&name, m, value, true)
                }
                Some(m) => Err(unsupported(&format!(":{m}"))),
                None => Err(syntax("syntax error: missing '}'")),
            },
            '-' | '+' | '?' => {
                let value = self.value(&name);
                self.modifier(&name, c, value, false)
            }
            '#' | '%' => self.trim(&name, c),
            '/' => self.replace(&name),
            other => Err(unsupported(&other.to_string())),
        }
    }

    /// Applies `-` (default), `+` (alternative) or `?` (error) given the
    /// variable's value (`None` = unset); with `colon`, empty counts as unset.
    fn modifier(
        &mut self,
        name: &str,
        m: char,
        value: Option<String>,
        colon: bool,
    ) -> Result<String> {
        let (word, _) = self.process(Some('}'))?;
        let value = value.filter(|v| !(colon && v.is_empty()));
        match (m, value) {
            ('+', Some(_)) => Ok(word),
            ('+', None) => Ok(String::new()),
            (_, Some(v)) => Ok(v),
            ('-', None) => Ok(word),
            (_, None) => {
                let message = match (word.is_empty(), self.value(name).is_some()) {
                    (false, _) => word,
                    (true, true) => "is not allowed to be empty".to_string(),
                    (true, false) => "is not allowed to be unset".to_string(),
                };
                Err(Error::invalid(format!("{name}: {message}")))
            }
        }
    }

    /// `${NAME#pattern}` / `##` (shortest / longest prefix removed) and
    /// `${NAME%pattern}` / `%%` (suffix).
    fn trim(&mut self, name: &str, op: char) -> Result<String> {
        let (word, _) = self.process_raw(Some('}'))?;
        let (greedy, word) = match word.strip_prefix(op) {
            Some(w) => (true, w.to_string()),
            None => (false, word),
        };
        let pattern = ShellPattern::new(&word, self.escape);
        let value: Vec<char> = self.value(name).unwrap_or_default().chars().collect();
        let n = value.len();
        let cut: String = if op == '#' {
            let mut lens: Vec<usize> = (0..=n).collect();
            if greedy {
                lens.reverse();
            }
            match lens.into_iter().find(|&l| pattern.matches(&value[..l])) {
                Some(l) => value[l..].iter().collect(),
                None => value.iter().collect(),
            }
        } else {
            let mut starts: Vec<usize> = (0..=n).collect();
            if !greedy {
                starts.reverse();
            }
            match starts.into_iter().find(|&s| pattern.matches(&value[s..])) {
                Some(s) => value[..s].iter().collect(),
                None => value.iter().collect(),
            }
        };
        Ok(cut)
    }

    /// `${NAME/pattern/replacement}` (first match) and `${NAME//p/r}` (all).
    fn replace(&mut self, name: &str) -> Result<String> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let (pattern, _) = self.process_raw(Some('/'))?;
        let (replacement, _) = self.process_raw(Some('}'))?;
        let pattern = ShellPattern::new(&pattern, self.escape);
        let value: Vec<char> = self.value(name).unwrap_or_default().chars().collect();
        let mut out = String::new();
        let mut i = 0;
        let mut replaced = false;
        // Like Go's regexp replacement: the leftmost longest match, and
        // (replacing all) no empty match right after a previous match.
        let mut previous_end = None;
        while i <= value.len() {
            if !replaced || all {
                let end = (i..=value.len())
                    .rev()
                    .find(|&e| pattern.matches(&value[i..e]));
                match end {
                    Some(e) if e > i => {
                        out.push_str(&replacement);
                        replaced = true;
                        previous_end = Some(e);
                        i = e;
                        continue;
                    }
                    Some(_) if previous_end != Some(i) => {
                        out.push_str(&replacement);
                        replaced = true;
                    }
                    _ => {}
                }
            }
            if let Some(&c) = value.get(i) {
                out.push(c);
            }
            i += 1;
        }
        Ok(out)
    }

    /// [`Lexer::process`] keeping escape characters (for patterns, where
    /// `\*` must stay a literal star).
    fn process_raw(&mut self, stop: Option<char>) -> Result<(String, Words)> {
        let before = self.raw_escapes;
        self.raw_escapes = true;
        let result = self.process(stop);
        self.raw_escapes = before;
        result
    }

    /// A variable name: letters, digits and `_`; or a run of digits; or one
    /// special parameter character. Empty if none.
    fn name(&mut self) -> String {
        let mut name = String::new();
        let Some(first) = self.peek() else {
            return name;
        };
        if first.is_ascii_digit() {
            while let Some(c) = self.peek().filter(char::is_ascii_digit) {
                name.push(c);
                self.pos += 1;
            }
            return name;
        }
        if "@*#?-$!".contains(first) {
            self.pos += 1;
            return first.to_string();
        }
        while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn value(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }
}

fn unsupported(m: &str) -> Error {
    Error::invalid(format!("unsupported modifier ({m}) in substitution"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "NAME" => Some("world".to_string()),
            "EMPTY" => Some(String::new()),
            "SPACED" => Some("a b  c".to_string()),
            "PORTS" => Some("80 443/udp".to_string()),
            "X1" => Some("one".to_string()),
            _ => None,
        }
    }

    #[test]
    fn expand_substitutes_like_docker() {
        // (word, escape, expanded)
        let cases = [
            ("plain", '\\', "plain"),
            ("$NAME", '\\', "world"),
            ("${NAME}", '\\', "world"),
            ("hello-$NAME!", '\\', "hello-world!"),
            ("${NAME}s", '\\', "worlds"),
            ("$NAMEs", '\\', ""),
            ("$X1", '\\', "one"),
            ("$UNSET", '\\', ""),
            ("a${UNSET}b", '\\', "ab"),
            ("${UNSET:-dflt}", '\\', "dflt"),
            ("${EMPTY:-dflt}", '\\', "dflt"),
            ("${NAME:-dflt}", '\\', "world"),
            ("${UNSET-dflt}", '\\', "dflt"),
            ("${EMPTY-dflt}", '\\', ""),
            ("${UNSET:+alt}", '\\', ""),
            ("${EMPTY:+alt}", '\\', ""),
            ("${NAME:+alt}", '\\', "alt"),
            ("${EMPTY+alt}", '\\', "alt"),
            ("${UNSET+alt}", '\\', ""),
            ("${UNSET:-$NAME}", '\\', "world"),
            ("${UNSET:-${NAME:+x}y}", '\\', "xy"),
            ("${UNSET:-a b}", '\\', "a b"),
            ("${NAME:?must be set}", '\\', "world"),
            // Escapes and quotes.
            ("\\$NAME", '\\', "$NAME"),
            ("`$NAME", '`', "$NAME"),
            ("\\$NAME", '`', "\\world"),
            ("a\\ b", '\\', "a b"),
            ("trailing\\", '\\', "trailing"),
            ("'$NAME'", '\\', "$NAME"),
            ("\"$NAME\"", '\\', "world"),
            ("\"a \\\"q\\\" \\$NAME \\n\"", '\\', "a \"q\" $NAME \\n"),
            ("'a\\b'", '\\', "a\\b"),
            ("\"it's\"", '\\', "it's"),
            ("x\"\"y", '\\', "xy"),
            // A `$` without a name stays.
            ("$", '\\', "$"),
            ("a$ b", '\\', "a$ b"),
            ("$/x", '\\', "$/x"),
            ("${NAME}$", '\\', "world$"),
        ];
        for (word, escape, want) in cases {
            assert_eq!(
                expand(word, escape, &env).unwrap(),
                want,
                "expand({word:?})"
            );
        }
    }

    #[test]
    fn expand_words_splits_unquoted_whitespace() {
        let cases: [(&str, &[&str]); 8] = [
            ("$PORTS", &["80", "443/udp"]),
            ("8080 $PORTS", &["8080", "80", "443/udp"]),
            ("\"$SPACED\"", &["a b  c"]),
            ("$SPACED", &["a", "b", "c"]),
            ("'a b' c", &["a b", "c"]),
            ("a\\ b c", &["a b", "c"]),
            ("  lead  trail  ", &["lead", "trail"]),
            ("$UNSET \"\"", &[]),
        ];
        for (word, want) in cases {
            assert_eq!(
                expand_words(word, '\\', &env).unwrap(),
                want,
                "expand_words({word:?})"
            );
        }
    }

    #[test]
    fn expand_heredoc_keeps_quotes_and_most_escapes() {
        let cases = [
            ("echo \"$NAME\" '$NAME'\n", "echo \"world\" 'world'\n"),
            ("cost: \\$5 \\\\ \\n\n", "cost: $5 \\ \\n\n"),
            ("joined \\\nline\n", "joined line\n"),
            ("${UNSET:-it's}\n", "it's\n"),
            ("$EMPTY$NAME", "world"),
        ];
        for (content, want) in cases {
            assert_eq!(
                expand_heredoc(content, '\\', &env).unwrap(),
                want,
                "{content:?}"
            );
        }
        assert!(expand_heredoc("${NAME", '\\', &env).is_err());
    }

    #[test]
    fn pattern_modifiers_trim_and_replace() {
        let lookup = |name: &str| match name {
            "F" => Some("dir/sub/file.tar.gz".to_string()),
            "P" => Some("a-b-c".to_string()),
            "S" => Some("a*b".to_string()),
            _ => None,
        };
        let cases = [
            ("${F#*/}", "sub/file.tar.gz"),
            ("${F##*/}", "file.tar.gz"),
            ("${F%.*}", "dir/sub/file.tar"),
            ("${F%%.*}", "dir/sub/file"),
            ("${F#nomatch}", "dir/sub/file.tar.gz"),
            ("${F#dir/?ub}", "/file.tar.gz"),
            ("${UNSET#x}", ""),
            ("${P/-/+}", "a+b-c"),
            ("${P//-/+}", "a+b+c"),
            ("${P//-/}", "abc"),
            ("${P/b*/x}", "a-x"),
            ("${P/z/y}", "a-b-c"),
            ("${P//*/R}", "R"),
            ("${UNSET/*/R}", "R"),
            ("${P//?/.}", "....."),
            ("${S/\\*/x}", "axb"),
            ("${S#a\\*}", "b"),
        ];
        for (word, want) in cases {
            assert_eq!(
                expand(word, '\\', &lookup).unwrap(),
                want,
                "expand({word:?})"
            );
        }
    }

    #[test]
    fn bad_substitutions_are_errors() {
        let cases = [
            ("${NAME", "syntax error: missing '}'"),
            ("${UNSET:-x", "syntax error: missing '}'"),
            ("${NAME/x", "syntax error: missing '/' in ${}"),
            // Docker needs the second `/` even for an empty replacement.
            ("${NAME//x}", "syntax error: missing '/' in ${}"),
            ("${NAME:=x}", "unsupported modifier (:=) in substitution"),
            ("${NAME=x}", "unsupported modifier (=) in substitution"),
            ("${NAME:#x}", "unsupported modifier (:#) in substitution"),
            ("${NAME^^}", "unsupported modifier (^) in substitution"),
            ("${ NAME}", "unsupported modifier ( ) in substitution"),
            ("${}", "syntax error: bad substitution"),
            ("${:-x}", "syntax error: bad substitution"),
            ("${{x}}", "syntax error: bad substitution"),
            ("'open", "matching single-quote"),
            ("\"open", "matching double-quote"),
            ("${UNSET:?must be set}", "UNSET: must be set"),
            ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
            ("${UNSET?}", "UNSET: is not allowed to be unset"),
            ("${UNSET:?}", "UNSET: is not allowed to be unset"),
        ];
        for (word, want) in cases {
            let err = expand(word, '\\', &env).expect_err(word);
            assert_eq!(err.kind, berth_errdefs::ErrorKind::InvalidArgument);
            assert!(err.message.contains(want), "{word:?}: {}", err.message);
        }
        // `${EMPTY?}` only fails when unset.
        assert_eq!(expand("${EMPTY?}", '\\', &env).unwrap(), "");
    }
}
