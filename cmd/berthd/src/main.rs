//! berthd: parse settings before binding anything, start logging, wire the
//! crates, serve until SIGTERM/SIGINT, then drain.

mod config;
mod server;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

/// sysexits.h EX_USAGE: the configuration is wrong, retrying won't help.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let flags = config::Flags::parse();
    let config = match config::Config::resolve(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berthd: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(&config);
    raise_fd_limit();
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berthd: start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("berthd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The soft limit on open files up to the hard one, as Go programs do: the
/// streaming server's connection cap, not a 1024 default, must be what
/// bounds descriptors, so the CRI socket never starves.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(
                    "cannot raise the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

fn init_logging(config: &config::Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: escapes are noise in a
        // file or the journal.
        .with_ansi(std::io::stderr().is_terminal());
    if config.json_logs {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// glibc gives each thread that allocates an arena of its own (up to 8
/// per core), and each keeps what was freed in it: after a pull or a
/// scrape on the blocking pool, idle RSS stays high. Two arenas are
/// plenty for a daemon that mostly waits.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets a tunable; called before any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
