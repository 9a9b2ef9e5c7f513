//! Logical lines to typed instructions and stages.

use std::time::Duration;

use berth_errdefs::{Error, Result};

use crate::ast::{
    ArgDef, CmdLine, Command, Copy, Dockerfile, From, HealthCheckCmd, Healthcheck, Heredoc,
    Instruction, KeyValue, Run, Stage,
};
use crate::duration::parse_go_duration;
use crate::lines::{parse_error, shell_words, split};

/// Parses a Dockerfile. Errors are InvalidArgument, worded as dockerd's:
/// `dockerfile parse error line N: <what>`.
pub fn parse(text: &str) -> Result<Dockerfile> {
    let source = split(text)?;
    if source.lines.is_empty() {
        return Err(Error::invalid("file with no instructions"));
    }
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for logical in source.lines {
        let line = logical.line;
        let parsed = parse_line(&logical.text, line, source.escape, logical.heredocs, false)
            .map_err(|message| parse_error(line, message))?;
        match (parsed, stages.last_mut()) {
            (Parsed::From { name, from }, _) => {
                if let Some(name) = &name {
                    if stages.iter().any(|s| s.name.as_ref() == Some(name)) {
                        return Err(parse_error(line, format!("duplicate stage name {name:?}")));
                    }
                }
                stages.push(Stage {
                    name,
                    from,
                    line,
                    original: logical.text,
                    instructions: Vec::new(),
                });
            }
            (Parsed::Command(command), Some(stage)) => stage.instructions.push(Instruction {
                line,
                original: logical.text,
                command,
            }),
            (Parsed::Command(command @ Command::Arg(_)), None) => meta_args.push(Instruction {
                line,
                original: logical.text,
                command,
            }),
            (Parsed::Command(_), None) => {
                return Err(parse_error(line, "no build stage in current context"))
            }
        }
    }
    if stages.is_empty() {
        return Err(Error::invalid(
            "No image was generated. Is your Dockerfile empty?",
        ));
    }
    Ok(Dockerfile {
        escape: source.escape,
        syntax: source.syntax,
        meta_args,
        stages,
        notes: source.notes,
    })
}

/// Parses one ONBUILD trigger (an entry of a base image's `OnBuild` list)
/// as the instruction it runs, with `line` 0. Same rules as inside a
/// Dockerfile (FROM, MAINTAINER and ONBUILD are refused).
pub fn parse_trigger(text: &str) -> Result<Instruction> {
    let text = text.trim();
    match parse_line(text, 0, '\\', Vec::new(), true) {
        Ok(Parsed::Command(command)) => Ok(Instruction {
            line: 0,
            original: text.to_string(),
            command,
        }),
        Ok(Parsed::From { .. }) => Err(Error::invalid("FROM isn't allowed as an ONBUILD trigger")),
        Err(message) => Err(Error::invalid(format!(
            "ONBUILD trigger {text:?}: {message}"
        ))),
    }
}

enum Parsed {
    From { name: Option<String>, from: From },
    Command(Command),
}

/// Errors of one line, without the `dockerfile parse error line N: ` prefix.
type LineResult<T> = std::result::Result<T, String>;

/// Parses one logical line. `trigger` is set for an ONBUILD's instruction.
fn parse_line(
    text: &str,
    line: usize,
    escape: char,
    heredocs: Vec<Heredoc>,
    trigger: bool,
) -> LineResult<Parsed> {
    let (keyword, rest) = match text.split_once(char::is_whitespace) {
        Some((k, r)) => (k, r.trim_start()),
        None => (text, ""),
    };
    let upper = keyword.to_ascii_uppercase();
    if trigger {
        match upper.as_str() {
            "ONBUILD" => return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()),
            "FROM" | "MAINTAINER" => {
                return Err(format!("{upper} isn't allowed as an ONBUILD trigger"))
            }
            _ => {}
        }
    }
    let (flags, args) = extract_flags(rest);
    let mut flags = Flags::new(flags)?;
    let command = match upper.as_str() {
        "FROM" => {
            return parse_from(args, &mut flags).map(|(name, from)| Parsed::From { name, from })
        }
        "RUN" => {
            let cmd = cmd_line(&upper, args, false)?;
            Command::Run(Run { cmd, heredocs })
        }
        "CMD" => Command::Cmd(cmd_line(&upper, args, true)?),
        "ENTRYPOINT" => Command::Entrypoint(cmd_line(&upper, args, true)?),
        "SHELL" => match json_array(args) {
            Some(v) if v.is_empty() => return Err(at_least_one(&upper)),
            Some(v) => Command::Shell(v),
            None if args.is_empty() => return Err(at_least_one(&upper)),
            None => return Err(format!("{upper} requires the arguments to be in JSON form")),
        },
        "COPY" | "ADD" => {
            let copy = parse_copy(&upper, args, escape, heredocs, &mut flags)?;
            if upper == "COPY" {
                Command::Copy(copy)
            } else {
                Command::Add(copy)
            }
        }
        "ENV" => Command::Env(key_values(&upper, args, escape)?),
        "LABEL" => Command::Label(key_values(&upper, args, escape)?),
        "ARG" => Command::Arg(arg_defs(args, escape)?),
        "WORKDIR" => Command::Workdir(one_argument(&upper, args)?),
        "USER" => Command::User(one_argument(&upper, args)?),
        "STOPSIGNAL" => Command::Stopsignal(one_argument(&upper, args)?),
        "MAINTAINER" => Command::Maintainer(one_argument(&upper, args)?),
        "EXPOSE" => {
            let ports: Vec<String> = args.split_whitespace().map(str::to_string).collect();
            if ports.is_empty() {
                return Err(at_least_one(&upper));
            }
            Command::Expose(ports)
        }
        "VOLUME" => Command::Volume(parse_volume(args)?),
        "HEALTHCHECK" => Command::Healthcheck(parse_healthcheck(args, &mut flags)?),
        "ONBUILD" => {
            if args.is_empty() {
                return Err(at_least_one(&upper));
            }
            let Parsed::Command(inner) = parse_line(args, line, escape, Vec::new(), true)? else {
                unreachable!("parse_line refuses FROM as a trigger");
            };
            Command::Onbuild(Box::new(Instruction {
                line,
                original: args.to_string(),
                command: inner,
            }))
        }
        _ => return Err(format!("unknown instruction: {upper}")),
    };
    flags.finish()?;
    Ok(Parsed::Command(command))
}

fn at_least_one(name: &str) -> String {
    format!("{name} requires at least one argument")
}

/// `FROM [--platform=p] image [AS name]`.
fn parse_from(args: &str, flags: &mut Flags) -> LineResult<(Option<String>, From)> {
    let platform = flags.string("platform")?;
    flags.finish()?;
    let words: Vec<&str> = args.split_whitespace().collect();
    let name = match words.as_slice() {
        [_] => None,
        [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let name = name.to_ascii_lowercase();
            if !valid_stage_name(&name) {
                return Err(format!(
                    "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                ));
            }
            Some(name)
        }
        _ => return Err("FROM requires either one or three arguments".into()),
    };
    let from = From {
        image: words[0].to_string(),
        platform,
    };
    Ok((name, from))
}

/// `^[a-z][a-z0-9-_.]*$`, as Docker requires of stage names.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// RUN, CMD, ENTRYPOINT: a JSON array of strings is exec form; anything
/// else (invalid JSON included) is shell form, as in Docker.
fn cmd_line(name: &str, args: &str, may_be_empty_json: bool) -> LineResult<CmdLine> {
    if let Some(v) = json_array(args) {
        if v.is_empty() && !may_be_empty_json {
            return Err(at_least_one(name));
        }
        return Ok(CmdLine::Exec(v));
    }
    if args.is_empty() {
        return Err(at_least_one(name));
    }
    Ok(CmdLine::Shell(args.to_string()))
}

/// `args` as a JSON array of strings, if it is one.
pub(crate) fn json_array(args: &str) -> Option<Vec<String>> {
    if !args.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(args).ok()
}

/// A JSON array, or else whitespace-separated words (COPY, ADD, VOLUME).
fn json_or_words(args: &str) -> Vec<String> {
    json_array(args).unwrap_or_else(|| args.split_whitespace().map(str::to_string).collect())
}

fn parse_copy(
    name: &str,
    args: &str,
    escape: char,
    heredocs: Vec<Heredoc>,
    flags: &mut Flags,
) -> LineResult<Copy> {
    let from = if name == "COPY" {
        flags.string("from")?
    } else {
        None
    };
    let chown = flags.string("chown")?;
    let chmod = flags.string("chmod")?;
    let link = flags.bool("link")?;
    let mut words = if heredocs.is_empty() {
        json_or_words(args)
    } else {
        // Heredoc sources are the `<<NAME` words; the others are paths.
        shell_words(args, escape)
    };
    let total = words.len();
    if total < 2 {
        return Err(format!(
            "{name} requires at least two arguments, but only one was provided. Destination could not be determined."
        ));
    }
    let dest = words.pop().unwrap_or_default();
    if !heredocs.is_empty() {
        words.retain(|w| {
            !w.trim_start_matches(|c: char| c.is_ascii_digit())
                .starts_with("<<")
        });
    }
    Ok(Copy {
        sources: words,
        heredocs,
        dest,
        from,
        chown,
        chmod,
        link,
    })
}

/// ENV and LABEL: `key value` (legacy, one pair: the rest of the line is
/// the value) or `key=value key2="value 2"...`.
fn key_values(name: &str, args: &str, escape: char) -> LineResult<Vec<KeyValue>> {
    let words = shell_words(args, escape);
    let Some(first) = words.first() else {
        return Err(at_least_one(name));
    };
    if !first.contains('=') {
        let Some((key, value)) = args.split_once(char::is_whitespace) else {
            return Err(format!("{name} must have two arguments"));
        };
        return Ok(vec![KeyValue {
            key: key.to_string(),
            value: value.trim_start().to_string(),
        }]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err(format!("{name} names can not be blank")),
            Some((k, v)) => Ok(KeyValue {
                key: k.to_string(),
                value: v.to_string(),
            }),
            None => Err(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            )),
        })
        .collect()
}

/// ARG: one or more `name` or `name=default`.
fn arg_defs(args: &str, escape: char) -> LineResult<Vec<ArgDef>> {
    let words = shell_words(args, escape);
    if words.is_empty() {
        return Err(at_least_one("ARG"));
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err("ARG names can not be blank".to_string()),
            Some((n, d)) => Ok(ArgDef {
                name: n.to_string(),
                default: Some(d.to_string()),
            }),
            None => Ok(ArgDef {
                name: w.clone(),
                default: None,
            }),
        })
        .collect()
}

/// WORKDIR, USER, STOPSIGNAL, MAINTAINER: the rest of the line.
fn one_argument(name: &str, args: &str) -> LineResult<String> {
    if args.is_empty() {
        return Err(format!("{name} requires exactly one argument"));
    }
    Ok(args.to_string())
}

fn parse_volume(args: &str) -> LineResult<Vec<String>> {
    let volumes = json_or_words(args);
    if volumes.is_empty() {
        return Err(at_least_one("VOLUME"));
    }
    if volumes.iter().any(|v| v.trim().is_empty()) {
        return Err("VOLUME specified can not be an empty string".into());
    }
    Ok(volumes.into_iter().map(|v| v.trim().to_string()).collect())
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [--interval= --timeout=
/// --start-period= --start-interval= --retries=] CMD command`.
fn parse_healthcheck(args: &str, flags: &mut Flags) -> LineResult<Healthcheck> {
    let (kind, rest) = match args.split_once(char::is_whitespace) {
        Some((k, r)) => (k, r.trim_start()),
        None => (args, ""),
    };
    if kind.is_empty() {
        return Err(at_least_one("HEALTHCHECK"));
    }
    let kind = kind.to_ascii_uppercase();
    if kind == "NONE" {
        if !rest.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".into());
        }
        return Ok(Healthcheck::None);
    }
    let interval = flags.duration("interval")?;
    let timeout = flags.duration("timeout")?;
    let start_period = flags.duration("start-period")?;
    let start_interval = flags.duration("start-interval")?;
    let retries = match flags.string("retries")? {
        None => None,
        Some(r) => match r.parse::<i32>() {
            Ok(n) if n < 0 => return Err(format!("--retries cannot be negative ({n})")),
            Ok(0) => None,
            Ok(n) => Some(n as u32),
            Err(_) => return Err(format!("invalid --retries value {r:?}: not a number")),
        },
    };
    if kind != "CMD" {
        return Err(format!("Unknown type \"{kind}\" in HEALTHCHECK (try CMD)"));
    }
    let cmd = match json_array(rest) {
        Some(v) if !v.is_empty() => CmdLine::Exec(v),
        Some(_) => return Err("Missing command after HEALTHCHECK CMD".into()),
        None if rest.is_empty() => return Err("Missing command after HEALTHCHECK CMD".into()),
        None => CmdLine::Shell(rest.to_string()),
    };
    Ok(Healthcheck::Check(HealthCheckCmd {
        cmd,
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    }))
}

/// Splits leading `--flag[=value]` words off an instruction's arguments.
fn extract_flags(rest: &str) -> (Vec<&str>, &str) {
    let mut flags = Vec::new();
    let mut rest = rest;
    while let Some(word) = rest
        .split_whitespace()
        .next()
        .filter(|w| w.starts_with("--"))
    {
        rest = rest[word.len()..].trim_start();
        if word == "--" {
            break;
        }
        flags.push(word);
    }
    (flags, rest)
}

/// The arguments after any leading flags.
pub(crate) fn skip_flags(rest: &str) -> &str {
    extract_flags(rest).1
}

/// An instruction's flags, taken one by one by name; any left over at
/// [`Flags::finish`] is unknown to the instruction.
struct Flags<'a> {
    given: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Flags<'a> {
    fn new(words: Vec<&'a str>) -> LineResult<Self> {
        let mut given: Vec<(&str, Option<&str>)> = Vec::new();
        for word in words {
            let body = &word[2..];
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            if given.iter().any(|(n, _)| *n == name) {
                return Err(format!("Duplicate flag specified: {name}"));
            }
            given.push((name, value));
        }
        Ok(Flags { given })
    }

    fn take(&mut self, name: &str) -> Option<Option<&'a str>> {
        let i = self.given.iter().position(|(n, _)| *n == name)?;
        Some(self.given.remove(i).1)
    }

    /// A `--name=value` flag.
    fn string(&mut self, name: &str) -> LineResult<Option<String>> {
        match self.take(name) {
            None => Ok(None),
            Some(None) => Err(format!("Missing a value on flag: {name}")),
            Some(Some(v)) => Ok(Some(v.to_string())),
        }
    }

    /// A `--name` or `--name=true|false` flag.
    fn bool(&mut self, name: &str) -> LineResult<bool> {
        match self.take(name) {
            None => Ok(false),
            Some(None) => Ok(true),
            Some(Some(v)) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(Some(v)) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(Some(v)) => Err(format!("expecting boolean value for flag {name}, not: {v}")),
        }
    }

    /// A Go duration flag (`30s`, `1m30s`); `0` or absent is `None` (the
    /// runtime's default); otherwise at least 1ms.
    fn duration(&mut self, name: &str) -> LineResult<Option<Duration>> {
        let Some(value) = self.string(name)? else {
            return Ok(None);
        };
        let d = parse_go_duration(&value)
            .map_err(|e| format!("invalid duration {value:?} for --{name}: {e}"))?;
        if d.is_zero() {
            return Ok(None);
        }
        if d < Duration::from_millis(1) {
            return Err(format!("Interval \"{name}\" cannot be less than 1ms"));
        }
        Ok(Some(d))
    }

    fn finish(&self) -> LineResult<()> {
        match self.given.first() {
            Some((name, _)) => Err(format!("Unknown flag: {name}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
