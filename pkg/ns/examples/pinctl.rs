//! Manual tool: `pinctl pin <dir> [hostname]` (net, ipc, uts, pid) and
//! `pinctl unpin <dir>`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(2)
            .expect("usage: pinctl pin|unpin <dir> [hostname]"),
    );
    match args[1].as_str() {
        "pin" => {
            let p = berth_ns::pin(&berth_ns::PinRequest {
                dir,
                net: true,
                ipc: true,
                uts: true,
                pid: true,
                hostname: args.get(3).cloned(),
                user: None,
            })
            .unwrap();
            println!("{p:?}");
        }
        "unpin" => berth_ns::unpin(&dir).unwrap(),
        other => panic!("unknown command {other}"),
    }
}
