//! The attach socket of the built `berth-shim`, against real crun and runc:
//! several clients, stdin forwarding, stdin-once, the tty, exit frames, slow
//! clients and descriptor hygiene.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use support::{need_root, runtimes, wait_for, Container, DEADLINE};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const EXIT: u8 = 3;
const CLOSE_STDIN: u8 = 4;

/// One attach connection, as a test drives it.
struct Attach {
    sock: UnixStream,
    /// Output seen so far, per stream.
    out: Vec<u8>,
    err: Vec<u8>,
    /// The exit frame's payload, once it came.
    exit: Option<String>,
    /// The shim closed the connection.
    closed: bool,
}

impl Attach {
    fn connect(c: &Container) -> Attach {
        let sock = UnixStream::connect(c.state().join("attach.sock")).unwrap();
        sock.set_read_timeout(Some(DEADLINE)).unwrap();
        Attach {
            sock,
            out: Vec::new(),
            err: Vec::new(),
            exit: None,
            closed: false,
        }
    }

    fn send(&mut self, kind: u8, payload: &[u8]) {
        let mut frame = vec![kind];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        self.sock.write_all(&frame).unwrap();
    }

    fn stdin(&mut self, text: &str) {
        self.send(STDIN, text.as_bytes());
    }

    fn close_stdin(&mut self) {
        self.send(CLOSE_STDIN, b"");
    }

    /// Reads one frame and files it; false once the shim closed.
    fn read_frame(&mut self) -> bool {
        let mut head = [0u8; 5];
        match self.sock.read_exact(&mut head) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                ) =>
            {
                self.closed = true;
                return false;
            }
            Err(e) => panic!("reading a frame: {e}"),
        }
        let len = u32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
        let mut payload = vec![0u8; len];
        if let Err(e) = self.sock.read_exact(&mut payload) {
            // A client dropped for being slow may get a frame cut short.
            assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "reading a payload");
            self.closed = true;
            return false;
        }
        assert!(self.exit.is_none(), "a frame after the exit frame");
        match head[0] {
            STDOUT => self.out.extend_from_slice(&payload),
            STDERR => self.err.extend_from_slice(&payload),
            EXIT => self.exit = Some(String::from_utf8(payload).unwrap()),
            k => panic!("unknown frame kind {k}"),
        }
        true
    }

    fn out_text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// Reads until stdout holds `want` (after `from` bytes).
    fn wait_out(&mut self, from: usize, want: &str) {
        let start = Instant::now();
        while !String::from_utf8_lossy(&self.out[from.min(self.out.len())..]).contains(want) {
            assert!(
                start.elapsed() < DEADLINE && self.read_frame(),
                "no {want:?} in {:?}",
                self.out_text()
            );
        }
    }

    /// Reads to the end; returns the exit frame's payload.
    fn wait_exit(&mut self) -> String {
        while self.read_frame() {}
        self.exit.clone().expect("an exit frame before the close")
    }
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn stdout_lines(c: &Container) -> Vec<String> {
    c.log()
        .into_iter()
        .filter(|e| e.stream == "stdout")
        .map(|e| e.msg)
        .collect()
}

#[test]
fn two_clients_get_output_and_one_leaving_does_not_stop_the_other() {
    need_root();
    for rt in runtimes() {
        let script =
            "i=0; while :; do echo tick $i; echo oops $i >&2; i=$((i+1)); sleep 0.05; done";
        let mut c = Container::new(&rt, &["sh", "-c", script], false);
        c.create();
        let mut a = Attach::connect(&c);
        let mut b = Attach::connect(&c);
        c.start();
        a.wait_out(0, "tick 0\n");
        b.wait_out(0, "tick 0\n");
        while !String::from_utf8_lossy(&a.err).contains("oops 1\n") {
            assert!(a.read_frame());
        }
        assert!(
            !a.out_text().contains("oops"),
            "{}: stderr on stdout",
            rt.name
        );

        let shim = c.shim_pid.unwrap();
        let rss = support::proc_status_kb(shim, "VmRSS").unwrap();
        let anon = support::proc_status_kb(shim, "RssAnon").unwrap();
        eprintln!(
            "{}: berth-shim with 2 attached clients: VmRSS {rss} kB, RssAnon {anon} kB",
            rt.name
        );
        assert!(anon <= 256, "{}: RssAnon {anon} kB", rt.name);

        drop(a);
        let seen = b.out.iter().filter(|&&c| c == b'\n').count();
        while b.out.iter().filter(|&&c| c == b'\n').count() < seen + 5 {
            assert!(b.read_frame(), "{}", rt.name);
        }
        let lines = b.out_text();
        let ticks: Vec<u32> = lines
            .lines()
            .map(|l| l.strip_prefix("tick ").unwrap().parse().unwrap())
            .collect();
        // Nothing missing or out of order, while the other came and went.
        assert!(
            ticks.windows(2).all(|w| w[1] == w[0] + 1),
            "{}: {ticks:?}",
            rt.name
        );

        c.kill("KILL");
        assert_eq!(b.wait_exit(), "137", "{}", rt.name);
        assert_eq!(c.wait_exit()["exit_code"], 137);
        // The log has every tick the client saw.
        let logged = stdout_lines(&c);
        for t in &ticks {
            assert!(
                logged.contains(&format!("tick {t}")),
                "{}: tick {t}",
                rt.name
            );
        }
        let shim = c.shim_pid.unwrap();
        wait_for("the shim to exit", || {
            support::process_gone(shim).then_some(())
        });
        assert!(!c.state().join("attach.sock").exists(), "{}", rt.name);
        c.finish();
    }
}

#[test]
fn stdin_from_clients_reaches_the_container_and_the_log() {
    need_root();
    for rt in runtimes() {
        let script = "while read l; do echo got:$l; done; echo eof";
        let mut c = Container::new(&rt, &["sh", "-c", script], false);
        c.shim_flags.push("--stdin".into());
        c.create();
        let mut a = Attach::connect(&c);
        let mut b = Attach::connect(&c);
        c.start();
        a.stdin("hello\n");
        a.wait_out(0, "got:hello\n");
        b.wait_out(0, "got:hello\n");
        // A line in two frames, from the other client.
        b.stdin("wor");
        b.stdin("ld\n");
        a.wait_out(0, "got:world\n");
        // Without --stdin-once, a client closing stdin and leaving does not
        // close the container's.
        a.close_stdin();
        drop(a);
        let seen = b.out.len();
        b.stdin("still open\n");
        b.wait_out(seen, "got:still open\n");
        // An empty frame and a frame spanning reads are fine.
        b.stdin("");
        let long = "y".repeat(100_000);
        b.stdin(&format!("{long}\n"));
        b.wait_out(seen, &format!("got:{long}\n"));
        c.kill("KILL");
        assert_eq!(b.wait_exit(), "137", "{}", rt.name);
        c.wait_exit();
        let logged = stdout_lines(&c);
        for want in ["got:hello", "got:world", "got:still open"] {
            assert!(
                logged.iter().any(|l| l == want),
                "{}: {want} not logged",
                rt.name
            );
        }
        assert!(
            !logged.iter().any(|l| l == "eof"),
            "{}: {logged:?}",
            rt.name
        );
        c.finish();

        // Without --stdin, stdin frames are dropped and nothing breaks (cat
        // reads /dev/null).
        let script = "cat; echo cat-exited; while [ ! -e /tmp/go ]; do sleep 0.02; done";
        let mut c = Container::new(&rt, &["sh", "-c", script], false);
        c.create();
        let mut a = Attach::connect(&c);
        c.start();
        a.stdin("ignored\n");
        a.close_stdin();
        a.wait_out(0, "cat-exited\n");
        std::fs::write(c.rootfs().join("tmp/go"), "").unwrap();
        assert_eq!(a.wait_exit(), "0", "{}", rt.name);
        assert_eq!(a.out_text(), "cat-exited\n", "{}", rt.name);
        c.finish();
    }
}

#[test]
fn stdin_once_closes_stdin_when_its_first_user_is_done() {
    need_root();
    for rt in runtimes() {
        for by_disconnect in [false, true] {
            let script = "cat; echo cat-done; exit 5";
            let mut c = Container::new(&rt, &["sh", "-c", script], false);
            c.shim_flags.push("--stdin".into());
            c.shim_flags.push("--stdin-once".into());
            c.create();
            let mut watcher = Attach::connect(&c);
            c.start();
            // A client that never touches stdin comes and goes: stdin stays.
            let reader = Attach::connect(&c);
            drop(reader);
            let mut owner = Attach::connect(&c);
            owner.stdin("first\n");
            watcher.wait_out(0, "first\n");
            // Another client's close does not count: it is not the owner.
            let mut other = Attach::connect(&c);
            other.stdin("second\n");
            other.close_stdin();
            watcher.wait_out(0, "second\n");
            owner.stdin("third\n");
            watcher.wait_out(0, "third\n");
            if by_disconnect {
                drop(owner);
            } else {
                owner.close_stdin();
                owner.wait_out(0, "cat-done\n");
                assert_eq!(owner.wait_exit(), "5", "{}", rt.name);
            }
            assert_eq!(watcher.wait_exit(), "5", "{}", rt.name);
            assert_eq!(other.wait_exit(), "5", "{}", rt.name);
            assert_eq!(
                watcher.out_text(),
                "first\nsecond\nthird\ncat-done\n",
                "{}",
                rt.name
            );
            assert_eq!(c.wait_exit()["exit_code"], 5, "{}", rt.name);
            c.finish();
        }
    }
}

#[test]
fn tty_output_is_stdout_and_stdin_once_sends_eof() {
    need_root();
    for rt in runtimes() {
        let script = "echo ready; cat; echo oops >&2; echo done";
        let mut c = Container::new(&rt, &["sh", "-c", script], true);
        c.shim_flags.push("--stdin".into());
        c.shim_flags.push("--stdin-once".into());
        c.create();
        let mut a = Attach::connect(&c);
        c.start();
        a.wait_out(0, "ready\r\n");
        a.stdin("abc\n");
        // The tty echoes the line, then cat writes it.
        a.wait_out(0, "abc\r\nabc\r\n");
        assert_eq!(c.control(&["resize 100 40"]), vec!["ok\n"], "{}", rt.name);
        a.close_stdin();
        assert_eq!(a.wait_exit(), "0", "{}", rt.name);
        let text = a.out_text();
        assert!(text.contains("oops\r\ndone\r\n"), "{}: {text:?}", rt.name);
        assert!(a.err.is_empty(), "{}: stderr frames {:?}", rt.name, a.err);
        c.wait_exit();
        let logged = stdout_lines(&c);
        for want in ["ready", "abc", "oops", "done"] {
            assert!(
                logged.iter().any(|l| l == want),
                "{}: {want} not in {logged:?}",
                rt.name
            );
        }
        c.finish();
    }
}

#[test]
fn a_client_that_does_not_read_is_dropped_without_stalling_the_log() {
    need_root();
    for rt in runtimes() {
        // Bursts far larger than a socket buffer, with short pauses so that
        // a reading client keeps up even on a busy machine.
        const BURSTS: usize = 60;
        const BURST: usize = 2000;
        const LINES: usize = BURSTS * BURST;
        let script = format!(
            "echo start; while [ ! -e /tmp/go ]; do sleep 0.02; done; \
             for i in $(seq {BURSTS}); do yes 0123456789abcdefghijklmnopqrstuvwxyz | head -n {BURST}; sleep 0.01; done; \
             echo end"
        );
        let mut c = Container::new(&rt, &["sh", "-c", &script], false);
        c.create();
        let mut slow = Attach::connect(&c);
        let fast = Attach::connect(&c);
        c.start();
        c.wait_log("start", |e| e.msg == "start");
        // The fast client reads all the time, in a thread of its own.
        let reader = std::thread::spawn(move || {
            let mut fast = fast;
            let exit = fast.wait_exit();
            (exit, fast.out.len())
        });
        let began = Instant::now();
        std::fs::write(c.rootfs().join("tmp/go"), "").unwrap();
        // The monitor's peak memory while it copies to a fast and a stuck client.
        let shim = c.shim_pid.unwrap();
        let mut peak = 0;
        wait_for("the exit", || {
            if let Some(hwm) = support::proc_status_kb(shim, "VmHWM") {
                peak = hwm;
            }
            c.state().join("exit.json").exists().then_some(())
        });
        let exit = c.wait_exit();
        let took = began.elapsed();
        eprintln!("{}: berth-shim peak VmRSS {peak} kB under load", rt.name);
        assert_eq!(exit["exit_code"], 0, "{}: {exit}", rt.name);
        let logged = stdout_lines(&c);
        assert_eq!(logged.len(), LINES + 2, "{}", rt.name);
        assert_eq!(logged.last().unwrap(), "end", "{}", rt.name);
        eprintln!("{}: {LINES} lines logged in {took:?}", rt.name);

        let total = "start\n".len() + LINES * 37 + "end\n".len();
        let (fast_exit, fast_bytes) = reader.join().unwrap();
        assert_eq!(fast_exit, "0", "{}", rt.name);
        assert_eq!(fast_bytes, total, "{}", rt.name);
        // The slow one was cut off: part of the output, no exit frame.
        while slow.read_frame() {}
        eprintln!(
            "{}: the slow client got {} of {total} bytes",
            rt.name,
            slow.out.len()
        );
        assert!(slow.closed && slow.exit.is_none(), "{}", rt.name);
        assert!(
            slow.out.len() < total / 2,
            "{}: the slow client got {} bytes",
            rt.name,
            slow.out.len()
        );
        c.finish();
    }
}

#[test]
fn attach_and_detach_cycles_leak_nothing() {
    need_root();
    for rt in runtimes() {
        let script = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.02; done";
        let mut c = Container::new(&rt, &["sh", "-c", script], false);
        c.shim_flags.push("--stdin".into());
        c.create();
        c.start();
        c.wait_log("a tick", |e| e.msg.starts_with("tick"));
        let shim = c.shim_pid.unwrap();
        let before = fd_count(shim);
        let mut keeper = Attach::connect(&c);
        for i in 0..20 {
            let mut a = Attach::connect(&c);
            match i % 4 {
                // Reads a little and leaves.
                0 => a.wait_out(0, "tick"),
                // Writes stdin (the container does not read it) and leaves.
                1 => a.stdin("data\n"),
                // Done with writing, still reading, then leaves.
                2 => {
                    a.sock.shutdown(std::net::Shutdown::Write).unwrap();
                    a.wait_out(0, "tick");
                    a.wait_out(a.out.len(), "\n");
                }
                // A malformed frame: the shim closes this client only.
                _ => {
                    a.send(9, b"bogus");
                    while a.read_frame() {}
                    assert!(a.closed && a.exit.is_none());
                }
            }
            drop(a);
        }
        // One more than before: the keeper.
        wait_for("the shim to close the clients", || {
            (fd_count(shim) == before + 1).then_some(())
        });
        let seen = keeper.out.len();
        keeper.wait_out(seen, "tick");
        drop(keeper);
        wait_for("the shim to close the keeper", || {
            (fd_count(shim) == before).then_some(())
        });
        // Too long a stdin frame is malformed too.
        let mut a = Attach::connect(&c);
        a.send(STDIN, b"");
        a.sock
            .write_all(&[STDIN, 0xff, 0xff, 0xff, 0xff, b'x'])
            .unwrap();
        while a.read_frame() {}
        assert!(a.exit.is_none(), "{}", rt.name);
        wait_for("the shim to close it", || {
            (fd_count(shim) == before).then_some(())
        });
        let rss = support::proc_status_kb(shim, "VmRSS").unwrap();
        let anon = support::proc_status_kb(shim, "RssAnon").unwrap();
        eprintln!(
            "{}: berth-shim after 22 attach cycles: VmRSS {rss} kB, RssAnon {anon} kB",
            rt.name
        );
        assert!(anon <= 256, "{}: RssAnon {anon} kB", rt.name);
        c.kill("KILL");
        c.wait_exit();
        c.finish();
    }
}

#[test]
fn a_client_attached_at_the_end_gets_the_exit_frame() {
    need_root();
    for rt in runtimes() {
        let mut c = Container::new(&rt, &["sh", "-c", "echo hi; exit 42"], false);
        c.create();
        let mut a = Attach::connect(&c);
        c.start();
        assert_eq!(a.wait_exit(), "42", "{}", rt.name);
        assert_eq!(a.out_text(), "hi\n", "{}", rt.name);
        c.wait_exit();
        let shim = c.shim_pid.unwrap();
        wait_for("the shim to exit", || {
            support::process_gone(shim).then_some(())
        });
        assert!(UnixStream::connect(c.state().join("attach.sock")).is_err());
        c.finish();
    }
}
