//! Calls syscalls that Docker's default seccomp profile denies or allows
//! and prints `name=errno` for each (0: it succeeded), then the `Seccomp:`
//! mode of its own status. cri_seccomp runs it inside containers, bound in
//! from the host with the host's libc.

fn errno_of(rc: libc::c_long) -> i32 {
    if rc < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    } else {
        0
    }
}

/// A probe: its name and the raw syscall result.
type Probe = (&'static str, fn() -> libc::c_long);

fn main() {
    // SAFETY: each call takes only null pointers, constants or static
    // NUL-terminated strings; none of them can touch this process's memory.
    let probes: [Probe; 10] = [
        ("getpid", || unsafe { libc::syscall(libc::SYS_getpid) }),
        ("uname", || {
            let mut u: libc::utsname = unsafe { std::mem::zeroed() };
            unsafe { libc::uname(&mut u) as libc::c_long }
        }),
        ("personality_query", || unsafe {
            libc::syscall(libc::SYS_personality, 0xffff_ffffu64)
        }),
        // ADDR_NO_RANDOMIZE: not among the personas the profile allows.
        ("personality_no_randomize", || unsafe {
            libc::syscall(libc::SYS_personality, 0x0040000u64)
        }),
        // KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING, not created.
        ("keyctl", || unsafe {
            libc::syscall(libc::SYS_keyctl, 0, -3i64, 0)
        }),
        ("add_key", || unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"berth-probe".as_ptr(),
                c"x".as_ptr(),
                1usize,
                -2i64,
            )
        }),
        ("kexec_load", || unsafe {
            libc::syscall(libc::SYS_kexec_load, 0, 0, std::ptr::null::<u8>(), 0)
        }),
        ("mount", || unsafe {
            libc::mount(
                c"none".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            ) as libc::c_long
        }),
        // Without CAP_SYS_ADMIN the profile answers ENOSYS (errnoRet).
        ("clone3", || unsafe {
            libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize)
        }),
        // Last: if it succeeds the probe is in a user namespace of its own.
        ("unshare_user", || unsafe {
            libc::unshare(libc::CLONE_NEWUSER) as libc::c_long
        }),
    ];
    for (name, call) in probes {
        println!("{name}={}", errno_of(call()));
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mode = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim)
        .unwrap_or("?");
    println!("seccomp={mode}");
}
