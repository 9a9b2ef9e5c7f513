//! The `*` / `?` patterns of `${VAR#pattern}`, `${VAR%pattern}` and
//! `${VAR/pattern/replacement}` (no bracket expressions, as in Docker).

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`: any one character.
    Any,
    /// `*`: any run of characters, `/` included.
    Star,
}

/// A compiled shell pattern.
pub(crate) struct ShellPattern {
    tokens: Vec<Token>,
}

impl ShellPattern {
    /// Compiles `pattern`, in which `escape` makes the next character literal.
    pub(crate) fn new(pattern: &str, escape: char) -> Self {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                c if c == escape => Token::Literal(chars.next().unwrap_or(escape)),
                '*' => Token::Star,
                '?' => Token::Any,
                c => Token::Literal(c),
            });
        }
        ShellPattern { tokens }
    }

    /// Whether the pattern matches all of `s`.
    pub(crate) fn matches(&self, s: &[char]) -> bool {
        match_from(&self.tokens, s)
    }
}

fn match_from(tokens: &[Token], s: &[char]) -> bool {
    match tokens.split_first() {
        None => s.is_empty(),
        Some((Token::Literal(c), rest)) => s.first() == Some(c) && match_from(rest, &s[1..]),
        Some((Token::Any, rest)) => !s.is_empty() && match_from(rest, &s[1..]),
        Some((Token::Star, rest)) => (0..=s.len()).any(|i| match_from(rest, &s[i..])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_patterns_match_whole_strings() {
        let cases = [
            ("*.tar.gz", "a.tar.gz", true),
            ("*.tar.gz", "a.tar.gzx", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*", "", true),
            ("*/", "dir/sub/", true),
            ("\\*", "*", true),
            ("\\*", "x", false),
            ("", "", true),
        ];
        for (pattern, s, want) in cases {
            let chars: Vec<char> = s.chars().collect();
            assert_eq!(
                ShellPattern::new(pattern, '\\').matches(&chars),
                want,
                "{pattern:?} {s:?}"
            );
        }
    }
}
