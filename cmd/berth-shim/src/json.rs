//! The little JSON the shim writes (report line, exit.json) and reads (the
//! runtime's `--log-format json` entries), without a JSON library.

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The fields of one flat JSON object whose values are strings (other
/// values are skipped); `None` when the line is not such an object.
fn string_fields(line: &str) -> Option<Vec<(String, String)>> {
    let mut p = Parser {
        s: line.as_bytes(),
        i: 0,
    };
    p.ws();
    p.eat(b'{')?;
    let mut fields = Vec::new();
    p.ws();
    if p.eat(b'}').is_some() {
        return Some(fields);
    }
    loop {
        p.ws();
        let key = p.string()?;
        p.ws();
        p.eat(b':')?;
        p.ws();
        if p.peek() == Some(b'"') {
            let value = p.string()?;
            fields.push((key, value));
        } else {
            p.skip_value()?;
        }
        p.ws();
        match p.next()? {
            b',' => continue,
            b'}' => return Some(fields),
            _ => return None,
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek() == Some(b)).then(|| self.i += 1)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut v = 0;
        for _ in 0..4 {
            let d = (self.next()? as char).to_digit(16)?;
            v = v * 16 + d;
        }
        Some(v)
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.next()? {
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let c = match self.next()? {
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&hi) {
                                let save = self.i;
                                match (self.eat(b'\\'), self.eat(b'u')) {
                                    (Some(()), Some(())) => {
                                        let lo = self.hex4()?;
                                        0x10000
                                            + ((hi - 0xd800) << 10)
                                            + (lo.wrapping_sub(0xdc00) & 0x3ff)
                                    }
                                    _ => {
                                        self.i = save;
                                        0xfffd
                                    }
                                }
                            } else {
                                hi
                            };
                            char::from_u32(code).unwrap_or('\u{fffd}')
                        }
                        other => other as char,
                    };
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
                b => out.push(b),
            }
        }
    }

    /// Skips a non-string value (number, literal, nested object or array).
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth == 0 => return Some(()),
                b'}' | b']' => depth -= 1,
                b',' if depth == 0 => return Some(()),
                _ => {}
            }
            self.i += 1;
        }
    }
}

/// The message of the last `"level":"error"` entry in a runtime's JSON log
/// (runc and crun both write `{"level":..,"msg":..,"time":..}` lines).
pub fn last_runtime_error(log: &str) -> Option<String> {
    let mut last = None;
    for line in log.lines() {
        let Some(fields) = string_fields(line) else {
            continue;
        };
        let is_error = fields
            .iter()
            .any(|(k, v)| k == "level" && matches!(v.as_str(), "error" | "fatal" | "panic"));
        if is_error {
            if let Some((_, msg)) = fields.into_iter().find(|(k, _)| k == "msg") {
                last = Some(msg);
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn runtime_logs() {
        let runc = r#"{"level":"warning","msg":"w","time":"t"}
{"level":"error","msg":"runc create failed: exec: \"/bin/x\": stat /bin/x: no such file or directory","time":"2026-11-23T10:28:25Z"}
"#;
        assert_eq!(
            last_runtime_error(runc).unwrap(),
            r#"runc create failed: exec: "/bin/x": stat /bin/x: no such file or directory"#
        );
        let crun = r#"{"msg": "first", "level": "error", "time": "x"}
garbage
{"msg":"executable file `/bin/x` not found in $PATH: No such file or directory","level":"error","time":"2026-11-23T10:28:25.524574Z"}"#;
        assert_eq!(
            last_runtime_error(crun).unwrap(),
            "executable file `/bin/x` not found in $PATH: No such file or directory"
        );
        assert_eq!(
            last_runtime_error(
                r#"{"n":1.5,"o":{"a":[1,"}"]},"level":"error","msg":"\u00e9\ud83d\ude00"}"#
            )
            .unwrap(),
            "é😀"
        );
        assert_eq!(last_runtime_error(r#"{"level":"info","msg":"x"}"#), None);
    }
}
