//! Docker's `--change` (commit and import): Dockerfile instructions that
//! set an image's defaults for containers, read into the core's
//! [`ImageChanges`]. Only the instructions dockerd accepts there.

use berth_core::ImageChanges;

use crate::error::{ApiError, ApiResult};

/// Instructions a Dockerfile has but `--change` refuses.
const NOT_CHANGES: &[&str] = &[
    "ADD",
    "ARG",
    "COPY",
    "FROM",
    "HEALTHCHECK",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
];

/// Reads every `changes` value (each may hold several lines).
pub fn parse_changes(values: &[&str]) -> ApiResult<ImageChanges> {
    let mut out = ImageChanges::default();
    for line in values.iter().flat_map(|v| v.lines()) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match word.to_ascii_uppercase().as_str() {
            "CMD" => out.cmd = Some(command(rest)),
            "ENTRYPOINT" => out.entrypoint = Some(command(rest)),
            "ENV" => out.env.extend(
                pairs(rest, word)?
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}")),
            ),
            "LABEL" => out.labels.extend(pairs(rest, word)?),
            "WORKDIR" => out.working_dir = Some(required(rest, word)?),
            "USER" => out.user = Some(required(rest, word)?),
            "STOPSIGNAL" => out.stop_signal = Some(required(rest, word)?),
            "EXPOSE" => out.exposed_ports.extend(rest.split_whitespace().map(|p| {
                if p.contains('/') {
                    p.to_ascii_lowercase()
                } else {
                    format!("{p}/tcp")
                }
            })),
            "VOLUME" => out.volumes.extend(match json_array(rest) {
                Some(v) => v,
                None => rest.split_whitespace().map(str::to_string).collect(),
            }),
            upper if NOT_CHANGES.contains(&upper) => {
                return Err(ApiError::bad_request(format!(
                    "{upper} is not a valid change command"
                )))
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "dockerfile parse error line 1: unknown instruction: {word}"
                )))
            }
        }
    }
    Ok(out)
}

/// The exec form (a JSON array) as is; anything else in a shell.
fn command(rest: &str) -> Vec<String> {
    json_array(rest).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), rest.into()])
}

fn json_array(rest: &str) -> Option<Vec<String>> {
    rest.starts_with('[')
        .then(|| serde_json::from_str(rest).ok())
        .flatten()
}

fn required(rest: &str, word: &str) -> ApiResult<String> {
    if rest.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} requires exactly one argument",
            word.to_ascii_uppercase()
        )));
    }
    Ok(rest.to_string())
}

/// `k=v k2="v 2"`, or the old `k value with spaces`.
fn pairs(rest: &str, word: &str) -> ApiResult<Vec<(String, String)>> {
    let words = split_quoted(rest);
    let Some(first) = words.first() else {
        return Err(ApiError::bad_request(format!(
            "{} requires at least one argument",
            word.to_ascii_uppercase()
        )));
    };
    if !first.contains('=') {
        let (k, v) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        return Ok(vec![(k.to_string(), unquote(v.trim()))]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), unquote(v))),
            _ => Err(ApiError::bad_request(format!(
                "{}: invalid key=value pair {w:?}",
                word.to_ascii_uppercase()
            ))),
        })
        .collect()
}

/// Whitespace-separated words; quotes keep spaces (and stay in the word).
fn split_quoted(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                current.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (None, c) if c.is_whitespace() => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            (_, c) => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_like_dockerd() {
        let c = parse_changes(&[
            r#"CMD ["echo","x"]"#,
            "ENTRYPOINT /init --fast",
            r#"ENV A=1 B="two words""#,
            "ENV OLD value with spaces",
            "WORKDIR /srv\nUSER app",
            "LABEL org.example=yes",
            "EXPOSE 80 53/UDP",
            "STOPSIGNAL SIGQUIT",
            "VOLUME /data",
        ])
        .unwrap();
        assert_eq!(c.cmd.unwrap(), ["echo", "x"]);
        assert_eq!(c.entrypoint.unwrap(), ["/bin/sh", "-c", "/init --fast"]);
        assert_eq!(c.env, ["A=1", "B=two words", "OLD=value with spaces"]);
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.labels["org.example"], "yes");
        assert_eq!(c.exposed_ports, ["80/tcp", "53/udp"]);
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(c.volumes, ["/data"]);
    }

    #[test]
    fn other_instructions_are_refused_by_name() {
        let e = parse_changes(&["RUN rm -rf /"]).unwrap_err();
        assert_eq!(e.message, "RUN is not a valid change command");
        let e = parse_changes(&["BOGUS x"]).unwrap_err();
        assert!(
            e.message.contains("unknown instruction: BOGUS"),
            "{}",
            e.message
        );
        assert!(parse_changes(&["WORKDIR"]).is_err());
    }
}
