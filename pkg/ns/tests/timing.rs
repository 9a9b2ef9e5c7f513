//! Not an assertion: mean time of pin + unpin, printed for the record
//! (`cargo test -p berth-ns --release --test timing -- --nocapture`).

mod common;

use std::time::{Duration, Instant};

use berth_ns::{pin, unpin};
use common::*;

#[test]
fn mean_time_of_pin_and_unpin() {
    // /tmp here is ext4 on a virtual disk; /run/berth on a node is tmpfs,
    // like /dev/shm.
    let mut bases = vec![std::env::temp_dir()];
    if std::path::Path::new("/dev/shm").is_dir() {
        bases.push("/dev/shm".into());
    }
    for base in bases {
        let td = tempfile::tempdir_in(&base).unwrap();
        const N: u32 = 50;
        for (label, with_pid) in [("net+ipc+uts", false), ("net+ipc+uts+pid", true)] {
            let mut runs = Vec::new();
            let (mut t_pin, mut t_unpin) = (Duration::ZERO, Duration::ZERO);
            for i in 0..N {
                let dir = td.path().join(format!("{label}-{i}"));
                let req = if with_pid {
                    all(&dir, "timing")
                } else {
                    shared(&dir, "timing")
                };
                let t0 = Instant::now();
                pin(&req).unwrap();
                let t1 = Instant::now();
                unpin(&dir).unwrap();
                t_pin += t1 - t0;
                t_unpin += t1.elapsed();
                runs.push(t0.elapsed());
            }
            runs.sort();
            eprintln!(
                "{} {label}: pin {:?} + unpin {:?} = {:?} mean, {:?} median, over {N}",
                base.display(),
                t_pin / N,
                t_unpin / N,
                (t_pin + t_unpin) / N,
                runs[runs.len() / 2],
            );
        }
        assert_eq!(mounts_under(td.path()), vec![]);
    }
}
