use std::time::Duration;

use berth_errdefs::ErrorKind;

use super::*;
use crate::expands_variables;

fn only_stage(text: &str) -> Stage {
    let df = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(df.stages.len(), 1, "{text:?}");
    df.stages.into_iter().next().unwrap()
}

/// The command of `FROM scratch\n<line>`.
fn command(line: &str) -> Command {
    let stage = only_stage(&format!("FROM scratch\n{line}\n"));
    assert_eq!(stage.instructions.len(), 1, "{line:?}");
    stage.instructions.into_iter().next().unwrap().command
}

fn s(v: &str) -> String {
    v.to_string()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: s(k),
        value: s(v),
    }
}

fn copy(sources: &[&str], dest: &str) -> Copy {
    Copy {
        sources: strings(sources),
        heredocs: Vec::new(),
        dest: s(dest),
        from: None,
        chown: None,
        chmod: None,
        link: false,
    }
}

fn heredoc(name: &str, content: &str, expand: bool, strip_tabs: bool) -> Heredoc {
    Heredoc {
        name: s(name),
        content: s(content),
        expand,
        strip_tabs,
    }
}

fn shell_run(cmd: &str) -> Command {
    Command::Run(Run {
        cmd: CmdLine::Shell(s(cmd)),
        heredocs: Vec::new(),
    })
}

#[test]
fn every_instruction_parses_to_its_command() {
    let cases: Vec<(&str, Command)> = vec![
        ("RUN echo hi", shell_run("echo hi")),
        ("run echo hi", shell_run("echo hi")),
        ("RUN [\"echo\", \"hi\"]", Command::Run(Run { cmd: CmdLine::Exec(strings(&["echo", "hi"])), heredocs: vec![] })),
        ("CMD [\"sh\"]", Command::Cmd(CmdLine::Exec(strings(&["sh"])))),
        ("CMD []", Command::Cmd(CmdLine::Exec(vec![]))),
        ("CMD echo $HOME", Command::Cmd(CmdLine::Shell(s("echo $HOME")))),
        ("Entrypoint [\"/bin/app\", \"-v\"]", Command::Entrypoint(CmdLine::Exec(strings(&["/bin/app", "-v"])))),
        ("ENTRYPOINT exec app", Command::Entrypoint(CmdLine::Shell(s("exec app")))),
        ("SHELL [\"/bin/bash\", \"-c\"]", Command::Shell(strings(&["/bin/bash", "-c"]))),
        ("COPY a b /dst/", Command::Copy(copy(&["a", "b"], "/dst/"))),
        ("COPY [\"a b\", \"/d st\"]", Command::Copy(copy(&["a b"], "/d st"))),
        ("ADD app.tar.gz /opt", Command::Add(copy(&["app.tar.gz"], "/opt"))),
        ("ENV A=1 B=\"two words\" C=x\\ y", Command::Env(vec![kv("A", "1"), kv("B", "\"two words\""), kv("C", "x\\ y")])),
        ("ENV LEGACY value with spaces", Command::Env(vec![kv("LEGACY", "value with spaces")])),
        ("ENV E=", Command::Env(vec![kv("E", "")])),
        ("ARG V", Command::Arg(vec![ArgDef { name: s("V"), default: None }])),
        ("ARG V=1 W X=\"a b\"", Command::Arg(vec![
            ArgDef { name: s("V"), default: Some(s("1")) },
            ArgDef { name: s("W"), default: None },
            ArgDef { name: s("X"), default: Some(s("\"a b\"")) },
        ])),
        ("WORKDIR /app dir", Command::Workdir(s("/app dir"))),
        ("USER nobody:nogroup", Command::User(s("nobody:nogroup"))),
        ("LABEL a=b \"c d\"=\"e f\"", Command::Label(vec![kv("a", "b"), kv("\"c d\"", "\"e f\"")])),
        ("LABEL legacy the value", Command::Label(vec![kv("legacy", "the value")])),
        ("EXPOSE 80 443/udp $PORT", Command::Expose(strings(&["80", "443/udp", "$PORT"]))),
        ("VOLUME /data /logs", Command::Volume(strings(&["/data", "/logs"]))),
        ("VOLUME [\"/data\", \"/my logs\"]", Command::Volume(strings(&["/data", "/my logs"]))),
        ("STOPSIGNAL SIGTERM", Command::Stopsignal(s("SIGTERM"))),
        ("MAINTAINER Jane <jane@example.com>", Command::Maintainer(s("Jane <jane@example.com>"))),
        ("HEALTHCHECK NONE", Command::Healthcheck(Healthcheck::None)),
        ("HEALTHCHECK CMD curl -f localhost", Command::Healthcheck(Healthcheck::Check(HealthCheckCmd {
            cmd: CmdLine::Shell(s("curl -f localhost")),
            interval: None, timeout: None, start_period: None, start_interval: None, retries: None,
        }))),
        ("HEALTHCHECK --interval=5s --timeout=1m30s --start-period=500ms --start-interval=1s --retries=3 cmd [\"true\"]",
            Command::Healthcheck(Healthcheck::Check(HealthCheckCmd {
                cmd: CmdLine::Exec(strings(&["true"])),
                interval: Some(Duration::from_secs(5)),
                timeout: Some(Duration::from_secs(90)),
                start_period: Some(Duration::from_millis(500)),
                start_interval: Some(Duration::from_secs(1)),
                retries: Some(3),
            }))),
        ("HEALTHCHECK --interval=0s --retries=0 CMD true", Command::Healthcheck(Healthcheck::Check(HealthCheckCmd {
            cmd: CmdLine::Shell(s("true")),
            interval: None, timeout: None, start_period: None, start_interval: None, retries: None,
        }))),
        ("ONBUILD RUN make", Command::Onbuild(Box::new(Instruction { line: 2, original: s("RUN make"), command: shell_run("make") }))),
        ("onbuild copy --chown=1:1 . /src", Command::Onbuild(Box::new(Instruction {
            line: 2,
            original: s("copy --chown=1:1 . /src"),
            command: Command::Copy(Copy { chown: Some(s("1:1")), ..copy(&["."], "/src") }),
        }))),
    ];
    for (line, want) in cases {
        assert_eq!(command(line), want, "{line:?}");
    }
}

#[test]
fn invalid_json_falls_back_to_shell_form() {
    // (line, shell text): not a JSON array of strings, so the whole text
    // is a shell command, as in Docker.
    let cases = [
        ("CMD [\"a\", 1]", "[\"a\", 1]"),
        ("CMD [a, b]", "[a, b]"),
        ("CMD ['single']", "['single']"),
        ("CMD [\"unterminated\"", "[\"unterminated\""),
        ("CMD [\"x\"] trailing", "[\"x\"] trailing"),
    ];
    for (line, want) in cases {
        assert_eq!(
            command(line),
            Command::Cmd(CmdLine::Shell(s(want))),
            "{line:?}"
        );
    }
    assert_eq!(command("VOLUME [/a]"), Command::Volume(strings(&["[/a]"])));
}

#[test]
fn flags_are_parsed_per_instruction() {
    let want = Copy {
        from: Some(s("build")),
        chown: Some(s("app:app")),
        chmod: Some(s("0755")),
        link: true,
        ..copy(&["/out/bin"], "/usr/bin/")
    };
    assert_eq!(
        command("COPY --from=build --chown=app:app --chmod=0755 --link /out/bin /usr/bin/"),
        Command::Copy(want)
    );
    assert_eq!(
        command("COPY --link=false a b"),
        Command::Copy(copy(&["a"], "b"))
    );
    assert_eq!(
        command("ADD --chown=1 --link=true a b"),
        Command::Add(Copy {
            chown: Some(s("1")),
            link: true,
            ..copy(&["a"], "b")
        })
    );
    let stage = only_stage("FROM --platform=linux/amd64 busybox AS Build\n");
    assert_eq!(
        stage.from,
        From {
            image: s("busybox"),
            platform: Some(s("linux/amd64"))
        }
    );
    assert_eq!(stage.name.as_deref(), Some("build"));
}

#[test]
fn errors_name_the_line_and_the_instruction() {
    // (Dockerfile, error message)
    let cases = [
        ("", "file with no instructions"),
        ("\n# just a comment\n\n", "file with no instructions"),
        ("ARG A=1\n", "No image was generated. Is your Dockerfile empty?"),
        ("FROM a\n\nFOO bar\n", "dockerfile parse error line 3: unknown instruction: FOO"),
        ("FROM a\nrun\n", "dockerfile parse error line 2: RUN requires at least one argument"),
        ("FROM a\nRUN []\n", "dockerfile parse error line 2: RUN requires at least one argument"),
        ("ENV A=1\nFROM a\n", "dockerfile parse error line 1: no build stage in current context"),
        ("ARG A\nRUN x\n", "dockerfile parse error line 2: no build stage in current context"),
        ("FROM\n", "dockerfile parse error line 1: FROM requires either one or three arguments"),
        ("FROM a b\n", "dockerfile parse error line 1: FROM requires either one or three arguments"),
        ("FROM a AS 1x\n", "dockerfile parse error line 1: invalid name for build stage: \"1x\", name can't start with a number or contain symbols"),
        ("FROM a AS x\nFROM b AS X\n", "dockerfile parse error line 2: duplicate stage name \"x\""),
        ("FROM --plat=x a\n", "dockerfile parse error line 1: Unknown flag: plat"),
        ("FROM a\nCOPY --bogus x y\n", "dockerfile parse error line 2: Unknown flag: bogus"),
        ("FROM a\nADD --from=b x y\n", "dockerfile parse error line 2: Unknown flag: from"),
        ("FROM a\nRUN --mount=type=cache,target=/x true\n", "dockerfile parse error line 2: Unknown flag: mount"),
        ("FROM a\nCOPY --from x y\n", "dockerfile parse error line 2: Missing a value on flag: from"),
        ("FROM a\nCOPY --from=a --from=b x y\n", "dockerfile parse error line 2: Duplicate flag specified: from"),
        ("FROM a\nCOPY --link=maybe x y\n", "dockerfile parse error line 2: expecting boolean value for flag link, not: maybe"),
        ("FROM a\nCOPY onlyone\n", "dockerfile parse error line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined."),
        ("FROM a\nADD\n", "dockerfile parse error line 2: ADD requires at least two arguments, but only one was provided. Destination could not be determined."),
        ("FROM a\nSHELL /bin/bash -c\n", "dockerfile parse error line 2: SHELL requires the arguments to be in JSON form"),
        ("FROM a\nSHELL []\n", "dockerfile parse error line 2: SHELL requires at least one argument"),
        ("FROM a\nENV\n", "dockerfile parse error line 2: ENV requires at least one argument"),
        ("FROM a\nENV ONLYKEY\n", "dockerfile parse error line 2: ENV must have two arguments"),
        ("FROM a\nENV A=1 B\n", "dockerfile parse error line 2: Syntax error - can't find = in \"B\". Must be of the form: name=value"),
        ("FROM a\nENV =1\n", "dockerfile parse error line 2: ENV names can not be blank"),
        ("FROM a\nLABEL\n", "dockerfile parse error line 2: LABEL requires at least one argument"),
        ("FROM a\nARG\n", "dockerfile parse error line 2: ARG requires at least one argument"),
        ("FROM a\nARG =x\n", "dockerfile parse error line 2: ARG names can not be blank"),
        ("FROM a\nWORKDIR\n", "dockerfile parse error line 2: WORKDIR requires exactly one argument"),
        ("FROM a\nUSER\n", "dockerfile parse error line 2: USER requires exactly one argument"),
        ("FROM a\nEXPOSE\n", "dockerfile parse error line 2: EXPOSE requires at least one argument"),
        ("FROM a\nVOLUME\n", "dockerfile parse error line 2: VOLUME requires at least one argument"),
        ("FROM a\nVOLUME [\"/a\", \" \"]\n", "dockerfile parse error line 2: VOLUME specified can not be an empty string"),
        ("FROM a\nSTOPSIGNAL\n", "dockerfile parse error line 2: STOPSIGNAL requires exactly one argument"),
        ("FROM a\nHEALTHCHECK\n", "dockerfile parse error line 2: HEALTHCHECK requires at least one argument"),
        ("FROM a\nHEALTHCHECK NONE x\n", "dockerfile parse error line 2: HEALTHCHECK NONE takes no arguments"),
        ("FROM a\nHEALTHCHECK CMD\n", "dockerfile parse error line 2: Missing command after HEALTHCHECK CMD"),
        ("FROM a\nHEALTHCHECK RUN x\n", "dockerfile parse error line 2: Unknown type \"RUN\" in HEALTHCHECK (try CMD)"),
        ("FROM a\nHEALTHCHECK --interval=1us CMD x\n", "dockerfile parse error line 2: Interval \"interval\" cannot be less than 1ms"),
        ("FROM a\nHEALTHCHECK --timeout=5 CMD x\n", "dockerfile parse error line 2: invalid duration \"5\" for --timeout: missing unit in duration"),
        ("FROM a\nHEALTHCHECK --retries=-1 CMD x\n", "dockerfile parse error line 2: --retries cannot be negative (-1)"),
        ("FROM a\nHEALTHCHECK --bogus=1 CMD x\n", "dockerfile parse error line 2: Unknown flag: bogus"),
        ("FROM a\nONBUILD\n", "dockerfile parse error line 2: ONBUILD requires at least one argument"),
        ("FROM a\nONBUILD ONBUILD RUN x\n", "dockerfile parse error line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("FROM a\nONBUILD from b\n", "dockerfile parse error line 2: FROM isn't allowed as an ONBUILD trigger"),
        ("FROM a\nONBUILD MAINTAINER me\n", "dockerfile parse error line 2: MAINTAINER isn't allowed as an ONBUILD trigger"),
        ("FROM a\nONBUILD NOPE x\n", "dockerfile parse error line 2: unknown instruction: NOPE"),
        ("FROM a\nRUN <<EOF\necho\n", "dockerfile parse error line 2: unterminated heredoc"),
        ("# escape=x\nFROM a\n", "dockerfile parse error line 1: invalid escape token 'x' does not match ` or \\"),
        ("# escape=`\n# escape=\\\nFROM a\n", "dockerfile parse error line 2: only one escape parser directive can be used"),
        ("# syntax=a\n# Syntax=b\nFROM a\n", "dockerfile parse error line 2: only one syntax parser directive can be used"),
        // The line of a continued instruction is its first line.
        ("FROM a\nRUN a \\\n  b\nBAD \\\n x\n", "dockerfile parse error line 4: unknown instruction: BAD"),
    ];
    for (text, want) in cases {
        let err = parse(text).expect_err(text);
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{text:?}");
        assert_eq!(err.message, want, "{text:?}");
    }
}

#[test]
fn continuations_comments_and_lines() {
    let text = "\
# a comment
FROM busybox

RUN echo one \\
    two \\
# a comment inside the continuation
    three
  # indented comment
  copy a \\  
  b
";
    let stage = only_stage(text);
    assert_eq!(stage.line, 2);
    assert_eq!(stage.original, "FROM busybox");
    let lines: Vec<(usize, &str)> = stage
        .instructions
        .iter()
        .map(|i| (i.line, i.original.as_str()))
        .collect();
    assert_eq!(
        lines,
        [(4, "RUN echo one     two     three"), (9, "copy a   b")]
    );
    assert_eq!(
        stage.instructions[0].command,
        shell_run("echo one     two     three")
    );
    assert_eq!(
        stage.instructions[1].command,
        Command::Copy(copy(&["a"], "b"))
    );
}

#[test]
fn an_escaped_escape_does_not_continue_the_line() {
    // (Dockerfile, the RUN's original)
    let cases = [
        ("FROM a\nRUN echo a\\\\\nUSER u\n", "RUN echo a\\\\"),
        ("FROM a\nRUN echo a \\\n b\n", "RUN echo a  b"),
        (
            "# escape=`\nFROM a\nRUN dir c:\\``\nUSER u\n",
            "RUN dir c:\\``",
        ),
        ("FROM a\nRUN \\\n  echo\n", "RUN   echo"),
    ];
    for (text, want) in cases {
        let stage = only_stage(text);
        assert_eq!(stage.instructions[0].original, want, "{text:?}");
    }
}

#[test]
fn crlf_and_a_final_continuation_are_handled() {
    let stage = only_stage("FROM a\r\nRUN x \\\r\n  y\r\nRUN last \\");
    let originals: Vec<&str> = stage
        .instructions
        .iter()
        .map(|i| i.original.as_str())
        .collect();
    assert_eq!(originals, ["RUN x   y", "RUN last"]);
}

#[test]
fn empty_continuation_lines_are_skipped_with_a_note() {
    let df = parse("FROM a\nRUN a \\\n\n  b\n").unwrap();
    assert_eq!(df.stages[0].instructions[0].original, "RUN a   b");
    assert_eq!(
        df.notes,
        [
            "[WARNING]: Empty continuation line found in: RUN a   b",
            "[WARNING]: Empty continuation lines will become errors in a future release.",
        ]
    );
}

#[test]
fn parser_directives() {
    // (Dockerfile, escape in use, syntax recorded, the RUN's original text)
    let cases = [
        ("FROM a\nRUN x \\\n y\n", '\\', None, "RUN x  y"),
        ("# escape=`\nFROM a\nRUN x `\n y\n", '`', None, "RUN x  y"),
        (
            "#escape = `\nFROM a\nRUN c:\\dir\\ `\n y\n",
            '`',
            None,
            "RUN c:\\dir\\  y",
        ),
        (
            "# syntax=docker/dockerfile:1\n# escape=`\nFROM a\nRUN x `\n y\n",
            '`',
            Some("docker/dockerfile:1"),
            "RUN x  y",
        ),
        (
            "# SYNTAX=docker/dockerfile:1.4\nFROM a\nRUN x\n",
            '\\',
            Some("docker/dockerfile:1.4"),
            "RUN x",
        ),
        // After a plain comment, a blank line or an unknown directive,
        // directives are only comments.
        ("# hello\n# escape=`\nFROM a\nRUN x\n", '\\', None, "RUN x"),
        ("\n# escape=`\nFROM a\nRUN x\n", '\\', None, "RUN x"),
        (
            "# foo=bar\n# escape=`\nFROM a\nRUN x\n",
            '\\',
            None,
            "RUN x",
        ),
        ("FROM a\n# escape=`\nRUN x\n", '\\', None, "RUN x"),
        // `# check=` is a known directive: directives go on after it.
        (
            "# check=skip=all\n# escape=`\nFROM a\nRUN x `\n y\n",
            '`',
            None,
            "RUN x  y",
        ),
    ];
    for (text, escape, syntax, original) in cases {
        let df = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(df.escape, escape, "{text:?}");
        assert_eq!(df.syntax.as_deref(), syntax, "{text:?}");
        assert_eq!(df.stages[0].instructions[0].original, original, "{text:?}");
        assert_eq!(
            df.notes
                .iter()
                .any(|n| n.contains("syntax parser directive") && n.contains("ignored")),
            syntax.is_some(),
            "{text:?}: {:?}",
            df.notes
        );
    }
}

#[test]
fn heredocs() {
    // (instruction and body, the RUN or COPY's heredocs)
    let cases: Vec<(&str, Vec<Heredoc>)> = vec![
        (
            "RUN <<EOF\necho $HOME\n  indented\nEOF",
            vec![heredoc("EOF", "echo $HOME\n  indented\n", true, false)],
        ),
        (
            "RUN <<-EOT\n\t\techo tabbed\n\tEOT",
            vec![heredoc("EOT", "echo tabbed\n", true, true)],
        ),
        (
            "RUN <<\"EOF\"\necho $HOME\nEOF",
            vec![heredoc("EOF", "echo $HOME\n", false, false)],
        ),
        (
            "RUN <<'EOF'\necho $HOME\nEOF",
            vec![heredoc("EOF", "echo $HOME\n", false, false)],
        ),
        ("RUN <<EOF\nEOF", vec![heredoc("EOF", "", true, false)]),
        (
            "RUN cat <<A <<B > out\na\nA\nb\nB",
            vec![
                heredoc("A", "a\n", true, false),
                heredoc("B", "b\n", true, false),
            ],
        ),
        (
            "RUN python3 2<<EOF\nprint(1)\nEOF",
            vec![heredoc("EOF", "print(1)\n", true, false)],
        ),
        // A terminator must be alone on its line.
        (
            "RUN <<EOF\n EOF\nEOF x\nEOF",
            vec![heredoc("EOF", " EOF\nEOF x\n", true, false)],
        ),
        // Not heredocs: here-strings, exec form, other instructions.
        ("RUN cat <<<word", vec![]),
        ("RUN [\"cat\", \"<<EOF\"]", vec![]),
    ];
    for (text, want) in cases {
        let Command::Run(run) = command(text) else {
            panic!("{text:?}: not RUN")
        };
        assert_eq!(run.heredocs, want, "{text:?}");
    }
    let stage = only_stage("FROM a\nRUN <<EOF\nRUN not an instruction\nEOF\nUSER me\n");
    assert_eq!(stage.instructions.len(), 2);
    assert_eq!(stage.instructions[0].original, "RUN <<EOF");
    assert_eq!(stage.instructions[1].line, 5);
    assert_eq!(stage.instructions[1].command, Command::User(s("me")));
}

#[test]
fn copy_heredocs_are_inline_files() {
    let got = command("COPY --chmod=0644 <<one <<\"two\" /etc/\n1 $X\none\n2 $X\ntwo");
    let want = Copy {
        sources: vec![],
        heredocs: vec![
            heredoc("one", "1 $X\n", true, false),
            heredoc("two", "2 $X\n", false, false),
        ],
        chmod: Some(s("0644")),
        ..copy(&[], "/etc/")
    };
    assert_eq!(got, Command::Copy(want));
    let got = command("COPY file <<EOF /dir/\nx\nEOF");
    let Command::Copy(c) = got else {
        panic!("not COPY")
    };
    assert_eq!(
        (c.sources, c.dest, c.heredocs.len()),
        (strings(&["file"]), s("/dir/"), 1)
    );
    // ENV is not a heredoc instruction: the next line is an instruction.
    let stage = only_stage("FROM a\nENV X <<EOF\nUSER u\n");
    assert_eq!(stage.instructions.len(), 2);
}

#[test]
fn run_shell_script_includes_heredocs() {
    let cases = [
        ("RUN <<EOF\nset -e\necho hi\nEOF", Some("set -e\necho hi\n")),
        ("RUN <<-EOF\n\techo hi\n\tEOF", Some("echo hi\n")),
        ("RUN cat <<A > /a\nx\nA", Some("cat <<A > /a\nx\nA")),
        (
            "RUN cat <<A <<-B\n1\nA\n\t2\n\tB",
            Some("cat <<A <<-B\n1\nA\n2\nB"),
        ),
        ("RUN echo plain", Some("echo plain")),
        ("RUN [\"echo\"]", None),
    ];
    for (text, want) in cases {
        let Command::Run(run) = command(text) else {
            panic!("{text:?}: not RUN")
        };
        assert_eq!(run.shell_script().as_deref(), want, "{text:?}");
    }
}

#[test]
fn stages_meta_args_and_targets() {
    let text = "\
ARG BASE=busybox
ARG V1 V2=x
FROM ${BASE} AS Builder
RUN make
FROM builder
COPY --from=builder /out /
FROM scratch AS final
";
    let df = parse(text).unwrap();
    assert_eq!(df.meta_args.len(), 2);
    assert_eq!(df.meta_args[0].original, "ARG BASE=busybox");
    assert_eq!(
        df.meta_args[1].command,
        Command::Arg(vec![
            ArgDef {
                name: s("V1"),
                default: None
            },
            ArgDef {
                name: s("V2"),
                default: Some(s("x"))
            },
        ])
    );
    let names: Vec<Option<&str>> = df.stages.iter().map(|s| s.name.as_deref()).collect();
    assert_eq!(names, [Some("builder"), None, Some("final")]);
    assert_eq!(df.stages[0].from.image, "${BASE}");
    assert_eq!(df.stages[0].original, "FROM ${BASE} AS Builder");
    assert_eq!(df.stages[1].line, 5);
    // (target, stage index)
    let targets = [
        ("builder", Some(0)),
        ("BUILDER", Some(0)),
        ("final", Some(2)),
        ("1", Some(1)),
        ("3", None),
        ("nope", None),
        ("", None),
    ];
    for (target, want) in targets {
        assert_eq!(df.stage_index(target), want, "{target:?}");
    }
    // 2 meta ARGs + 3 FROMs + 2 instructions.
    assert_eq!(df.step_count(), 7);
    assert_eq!(df.step_count_through(0), 4);
    assert_eq!(df.step_count_through(1), 6);
}

#[test]
fn stage_index_takes_an_index_when_no_name_matches() {
    let df = parse("FROM a\nFROM b AS second\n").unwrap();
    assert_eq!(df.stage_index("0"), Some(0));
    assert_eq!(df.stage_index("1"), Some(1));
    assert_eq!(df.stage_index("second"), Some(1));
    assert_eq!(df.stage_index("-1"), None);
}

#[test]
fn which_instructions_expand_variables() {
    let expanded = [
        "ADD",
        "COPY",
        "ENV",
        "EXPOSE",
        "FROM",
        "LABEL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
        "ARG",
        "copy",
    ];
    let literal = [
        "RUN",
        "CMD",
        "ENTRYPOINT",
        "SHELL",
        "ONBUILD",
        "HEALTHCHECK",
        "MAINTAINER",
        "FOO",
    ];
    for name in expanded {
        assert!(expands_variables(name), "{name}");
    }
    for name in literal {
        assert!(!expands_variables(name), "{name}");
    }
    assert!(command("WORKDIR /x").expands_variables());
    assert!(!command("RUN x").expands_variables());
    assert!(!command("ONBUILD WORKDIR /x").expands_variables());
    assert_eq!(command("ONBUILD WORKDIR /x").name(), "ONBUILD");
}

#[test]
fn healthcheck_test_is_the_config_form() {
    let Command::Healthcheck(Healthcheck::Check(shell)) =
        command("HEALTHCHECK CMD curl -f x || exit 1")
    else {
        panic!("not a check")
    };
    assert_eq!(shell.test(), strings(&["CMD-SHELL", "curl -f x || exit 1"]));
    let Command::Healthcheck(Healthcheck::Check(exec)) =
        command("HEALTHCHECK CMD [\"/bin/check\", \"-q\"]")
    else {
        panic!("not a check")
    };
    assert_eq!(exec.test(), strings(&["CMD", "/bin/check", "-q"]));
}

#[test]
fn triggers_parse_as_their_instruction() {
    let t = parse_trigger("RUN echo built").unwrap();
    assert_eq!(
        (t.line, t.original.as_str(), t.command),
        (0, "RUN echo built", shell_run("echo built"))
    );
    let cases = [
        ("FROM x", "FROM isn't allowed as an ONBUILD trigger"),
        (
            "ONBUILD RUN x",
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        ("BOGUS x", "unknown instruction: BOGUS"),
    ];
    for (text, want) in cases {
        let err = parse_trigger(text).expect_err(text);
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains(want), "{text:?}: {}", err.message);
    }
}

#[test]
fn step_lines_match_dockerds_for_the_reference_trace() {
    // The Dockerfile of docker-api-traces/build.txt and the `Step N/M : `
    // lines dockerd 20.10's classic builder printed for it.
    let text = r#"FROM bb
RUN mkdir -p /app && echo "built by RUN step" > /app/built.txt && date > /app/build-date.txt
COPY hello.txt /app/hello.txt
ENV GREETING="hello from anchor" APP_HOME=/app
WORKDIR /app
CMD ["sh", "-c", "cat built.txt hello.txt; echo $GREETING"]
"#;
    let want = [
        r#"Step 1/6 : FROM bb"#,
        r#"Step 2/6 : RUN mkdir -p /app && echo "built by RUN step" > /app/built.txt && date > /app/build-date.txt"#,
        r#"Step 3/6 : COPY hello.txt /app/hello.txt"#,
        r#"Step 4/6 : ENV GREETING="hello from anchor" APP_HOME=/app"#,
        r#"Step 5/6 : WORKDIR /app"#,
        r#"Step 6/6 : CMD ["sh", "-c", "cat built.txt hello.txt; echo $GREETING"]"#,
    ];
    let df = parse(text).unwrap();
    let total = df.step_count();
    let mut originals = df
        .meta_args
        .iter()
        .map(|i| i.original.clone())
        .collect::<Vec<_>>();
    for stage in &df.stages {
        originals.push(stage.original.clone());
        originals.extend(stage.instructions.iter().map(|i| i.original.clone()));
    }
    let steps: Vec<String> = originals
        .iter()
        .enumerate()
        .map(|(n, text)| format!("Step {}/{total} : {text}", n + 1))
        .collect();
    assert_eq!(steps, want);
    // The ENV values expand to what the image config gets.
    let Command::Env(env) = &df.stages[0].instructions[2].command else {
        panic!("not ENV")
    };
    let values: Vec<String> = env
        .iter()
        .map(|kv| crate::expand(&kv.value, df.escape, &|_| None).unwrap())
        .collect();
    assert_eq!(values, ["hello from anchor", "/app"]);
}
