//! The parsed Dockerfile: stages of typed instructions.
//!
//! Words are kept as written (quotes, escapes and `$VAR` intact): a builder
//! expands the words of the instructions for which
//! [`Command::expands_variables`] is true with [`crate::expand`] (which also
//! removes quotes and escapes), at the point of the build where the
//! variables are known: each COPY/ADD source and the destination, each
//! ENV/LABEL key and value, each ARG default, the FROM image and platform,
//! WORKDIR, USER, STOPSIGNAL, each EXPOSE and VOLUME word. Heredoc bodies
//! with `expand` set go through [`crate::expand_heredoc`] (COPY/ADD; a RUN's
//! heredocs are left to the shell, see [`Run::shell_script`]).

use std::time::Duration;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character in use (`\` unless `# escape=` says `` ` ``);
    /// [`crate::expand`] needs it.
    pub escape: char,
    /// The `# syntax=` directive's value, recorded only: berth always builds
    /// with its own (classic) builder. [`Dockerfile::notes`] says so.
    pub syntax: Option<String>,
    /// ARG instructions before the first FROM (each a [`Command::Arg`]); their
    /// defaults may be used in FROM lines.
    pub meta_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
    /// Lines a builder prints to the user before building, like dockerd's
    /// `[WARNING]: ...` lines (empty continuation lines, an ignored
    /// `# syntax=`).
    pub notes: Vec<String>,
}

/// One build stage: a FROM line and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The `AS name`, lower-cased as Docker does.
    pub name: Option<String>,
    pub from: From,
    /// The FROM line's number (1-based) and text as printed in `Step N/M : <text>`.
    pub line: usize,
    pub original: String,
    pub instructions: Vec<Instruction>,
}

/// FROM's operands, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// Image reference, `scratch`, or an earlier stage's name.
    pub image: String,
    /// `--platform=` value.
    pub platform: Option<String>,
}

/// One instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line of the instruction's first line.
    pub line: usize,
    /// The instruction as written, continuation lines joined (escape char and
    /// newline removed), surrounding whitespace trimmed: what dockerd's
    /// classic builder prints after `Step N/M : `. Heredoc bodies are not part of it.
    pub original: String,
    pub command: Command,
}

/// A typed instruction (FROM is a [`Stage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Run),
    Cmd(CmdLine),
    Entrypoint(CmdLine),
    /// `SHELL ["executable", "args"...]` (JSON form only).
    Shell(Vec<String>),
    Copy(Copy),
    /// ADD has COPY's fields; `from` is always `None` (`--from` is refused).
    Add(Copy),
    Env(Vec<KeyValue>),
    Arg(Vec<ArgDef>),
    Workdir(String),
    User(String),
    Label(Vec<KeyValue>),
    /// Port words as written (`80`, `53/udp`, `$PORT`).
    Expose(Vec<String>),
    Volume(Vec<String>),
    Stopsignal(String),
    Healthcheck(Healthcheck),
    /// The trigger, parsed; its `original` is the text after `ONBUILD `,
    /// which is what goes into the image config's `OnBuild` list.
    Onbuild(Box<Instruction>),
    Maintainer(String),
}

/// Shell form (run with the stage's SHELL, default `/bin/sh -c`) or exec form
/// (a JSON array, run as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdLine {
    Shell(String),
    Exec(Vec<String>),
}

/// RUN: its command line and the heredocs it opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub cmd: CmdLine,
    /// Heredocs in the order they were opened (`RUN <<EOF`, `RUN cat <<A <<B`).
    pub heredocs: Vec<Heredoc>,
}

/// COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Source words (paths or globs in the context or `--from` stage/image),
    /// without the heredoc sources.
    pub sources: Vec<String>,
    /// Inline files (`COPY <<EOF /dest`): each creates a file named after its
    /// delimiter in `dest` (or `dest` itself when it does not end in `/` and
    /// is the only source).
    pub heredocs: Vec<Heredoc>,
    pub dest: String,
    /// `--from=<stage name, stage index or image>` (COPY only).
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=` octal mode as written.
    pub chmod: Option<String>,
    /// `--link` (accepted; the classic builder copies the same way either way).
    pub link: bool,
}

/// A here-document: `<<NAME` (or `<<-NAME`, `<<"NAME"`, `<<'NAME'`) followed
/// by lines up to a line that is exactly `NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter, without quotes or `-`.
    pub name: String,
    /// The body: each line followed by `\n`; leading tabs already removed for `<<-`.
    pub content: String,
    /// False when the delimiter was quoted: the body is taken literally.
    pub expand: bool,
    /// True for `<<-NAME`.
    pub strip_tabs: bool,
}

/// `key=value` of ENV and LABEL, both as written (quotes kept: `"a b"`);
/// expand both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// One name of an ARG instruction, with its default as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDef {
    pub name: String,
    pub default: Option<String>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check (config Test `["NONE"]`).
    None,
    Check(HealthCheckCmd),
}

/// `HEALTHCHECK [options] CMD ...`; an option not given is `None`
/// (the runtime's default applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckCmd {
    pub cmd: CmdLine,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

impl Run {
    /// The script a shell-form RUN hands to the shell (`sh -c <script>`):
    /// the command line, then each heredoc's body and delimiter line, so the
    /// shell feeds them as it would in a script. A RUN that is only one
    /// heredoc (`RUN <<EOF`) runs the body itself as the script, as
    /// BuildKit does. `None` for exec form.
    pub fn shell_script(&self) -> Option<String> {
        let CmdLine::Shell(line) = &self.cmd else {
            return None;
        };
        if let [only] = self.heredocs.as_slice() {
            if is_bare_heredoc(line) {
                return Some(only.content.clone());
            }
        }
        let mut script = line.clone();
        for h in &self.heredocs {
            script.push('\n');
            script.push_str(&h.content);
            script.push_str(&h.name);
        }
        Some(script)
    }
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"` alone on the command line.
fn is_bare_heredoc(line: &str) -> bool {
    let t = line.trim();
    t.starts_with("<<") && !t.contains(char::is_whitespace)
}

impl HealthCheckCmd {
    /// The image config's `Healthcheck.Test`: `["CMD-SHELL", cmd]` or `["CMD", args...]`.
    pub fn test(&self) -> Vec<String> {
        match &self.cmd {
            CmdLine::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
            CmdLine::Exec(args) => {
                let mut t = vec!["CMD".to_string()];
                t.extend(args.iter().cloned());
                t
            }
        }
    }
}

impl Command {
    /// The instruction's keyword, upper-case (`RUN`, `COPY`...).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Shell(_) => "SHELL",
            Command::Copy(_) => "COPY",
            Command::Add(_) => "ADD",
            Command::Env(_) => "ENV",
            Command::Arg(_) => "ARG",
            Command::Workdir(_) => "WORKDIR",
            Command::User(_) => "USER",
            Command::Label(_) => "LABEL",
            Command::Expose(_) => "EXPOSE",
            Command::Volume(_) => "VOLUME",
            Command::Stopsignal(_) => "STOPSIGNAL",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Onbuild(_) => "ONBUILD",
            Command::Maintainer(_) => "MAINTAINER",
        }
    }

    /// Whether a builder expands `$VAR`s in this instruction's words
    /// (see [`expands_variables`]).
    pub fn expands_variables(&self) -> bool {
        expands_variables(self.name())
    }
}

/// Whether Docker expands variables in the words of the instruction named
/// `instruction` (case-insensitive): ADD, COPY, ENV, EXPOSE, FROM, LABEL,
/// STOPSIGNAL, USER, VOLUME, WORKDIR and ARG's defaults are; RUN, CMD,
/// ENTRYPOINT (the shell or the program sees `$VAR`), SHELL, HEALTHCHECK,
/// MAINTAINER and ONBUILD (expanded when the trigger runs) are not.
pub fn expands_variables(instruction: &str) -> bool {
    const EXPANDED: [&str; 11] = [
        "ADD",
        "ARG",
        "COPY",
        "ENV",
        "EXPOSE",
        "FROM",
        "LABEL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    ];
    EXPANDED.iter().any(|n| n.eq_ignore_ascii_case(instruction))
}

impl Dockerfile {
    /// The stage `target` names: a stage name (case-insensitive) or a
    /// 0-based index. Names win over indexes, as in Docker.
    pub fn stage_index(&self, target: &str) -> Option<usize> {
        let lower = target.to_ascii_lowercase();
        if let Some(i) = self
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(i);
        }
        match target.parse::<usize>() {
            Ok(i) if i < self.stages.len() => Some(i),
            _ => None,
        }
    }

    /// The `M` of `Step N/M`: meta ARGs, FROM lines and every stage's
    /// instructions, as dockerd's classic builder counts them.
    pub fn step_count(&self) -> usize {
        self.step_count_through(self.stages.len().saturating_sub(1))
    }

    /// The `M` of `Step N/M` for a build that stops after stage `last`
    /// (`--target`): dockerd drops the later stages before counting.
    pub fn step_count_through(&self, last: usize) -> usize {
        self.meta_args.len()
            + self
                .stages
                .iter()
                .take(last.saturating_add(1))
                .map(|s| 1 + s.instructions.len())
                .sum::<usize>()
    }
}
