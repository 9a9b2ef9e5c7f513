//! Seccomp profiles compiled to BPF once, not on every container create.
//!
//! crun compiles the spec's `linux.seccomp` (Docker's default is ~300
//! syscalls) with libseccomp on every `create`: about half of a pod start.
//! Here each distinct resolved profile is compiled once with the same
//! library and the same translation, kept in memory and under the state
//! dir by the SHA-256 of its JSON, and handed to crun precompiled through
//! its `run.oci.seccomp_bpf_data` annotation. libseccomp is loaded at run
//! time (`libseccomp.so.2`, which crun itself needs), so building berth
//! needs no headers; a profile that cannot be compiled here, or one using
//! what the annotation cannot carry (filter flags, a notify listener),
//! stays in the spec for the runtime to compile, as before.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::io::{Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use berth_errdefs::{Error, Result};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, Spec};
use sha2::{Digest, Sha256};

/// crun's annotation for a filter already compiled (base64 of the
/// `struct sock_filter` array); crun then ignores `linux.seccomp`'s rules.
pub const BPF_ANNOTATION: &str = "run.oci.seccomp_bpf_data";

/// `struct scmp_arg_cmp`.
#[repr(C)]
struct ArgCmp {
    arg: c_uint,
    op: c_uint,
    datum_a: u64,
    datum_b: u64,
}

type Ctx = *mut c_void;

type InitFn = unsafe extern "C" fn(u32) -> Ctx;
type ReleaseFn = unsafe extern "C" fn(Ctx);
type ArchResolveFn = unsafe extern "C" fn(*const c_char) -> u32;
type ArchAddFn = unsafe extern "C" fn(Ctx, u32) -> c_int;
type SyscallResolveFn = unsafe extern "C" fn(*const c_char) -> c_int;
type RuleAddArrayFn = unsafe extern "C" fn(Ctx, u32, c_int, c_uint, *const ArgCmp) -> c_int;
type ExportBpfFn = unsafe extern "C" fn(Ctx, c_int) -> c_int;

/// The few libseccomp entry points used, resolved from the shared library.
struct Libseccomp {
    init: InitFn,
    release: ReleaseFn,
    arch_resolve_name: ArchResolveFn,
    arch_add: ArchAddFn,
    syscall_resolve_name: SyscallResolveFn,
    rule_add_array: RuleAddArrayFn,
    export_bpf: ExportBpfFn,
}

fn libseccomp() -> Result<&'static Libseccomp> {
    static LIB: OnceLock<std::result::Result<Libseccomp, String>> = OnceLock::new();
    LIB.get_or_init(load_libseccomp)
        .as_ref()
        .map_err(|e| Error::unavailable(e.clone()))
}

fn load_libseccomp() -> std::result::Result<Libseccomp, String> {
    // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast
    // to the signature libseccomp 2.x documents for it. The handle is never
    // closed, so the pointers stay valid for the life of the process.
    unsafe {
        let handle = libc::dlopen(
            c"libseccomp.so.2".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL,
        );
        if handle.is_null() {
            return Err("libseccomp.so.2 could not be loaded".into());
        }
        let sym = |name: &std::ffi::CStr| {
            let p = libc::dlsym(handle, name.as_ptr());
            if p.is_null() {
                Err(format!("libseccomp.so.2 has no {name:?}"))
            } else {
                Ok(p)
            }
        };
        use std::mem::transmute;
        Ok(Libseccomp {
            init: transmute::<*mut c_void, InitFn>(sym(c"seccomp_init")?),
            release: transmute::<*mut c_void, ReleaseFn>(sym(c"seccomp_release")?),
            arch_resolve_name: transmute::<*mut c_void, ArchResolveFn>(sym(
                c"seccomp_arch_resolve_name",
            )?),
            arch_add: transmute::<*mut c_void, ArchAddFn>(sym(c"seccomp_arch_add")?),
            syscall_resolve_name: transmute::<*mut c_void, SyscallResolveFn>(sym(
                c"seccomp_syscall_resolve_name",
            )?),
            rule_add_array: transmute::<*mut c_void, RuleAddArrayFn>(sym(
                c"seccomp_rule_add_array",
            )?),
            export_bpf: transmute::<*mut c_void, ExportBpfFn>(sym(c"seccomp_export_bpf")?),
        })
    }
}

/// The libseccomp action for an OCI one; `errno` is `errnoRet` (EPERM when
/// unset, as crun and runc default it).
fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32> {
    use LinuxSeccompAction as A;
    Ok(match a {
        A::ScmpActKill => 0,
        A::ScmpActKillThread => 0,
        A::ScmpActKillProcess => 0x8000_0000,
        A::ScmpActTrap => 0x0003_0000,
        A::ScmpActErrno => 0x0005_0000 | (errno.unwrap_or(libc::EPERM as u32) & 0xffff),
        A::ScmpActTrace => 0x7ff0_0000 | (errno.unwrap_or(libc::EPERM as u32) & 0xffff),
        A::ScmpActLog => 0x7ffc_0000,
        A::ScmpActAllow => 0x7fff_0000,
        // A notify filter needs the listener crun sets up: not carried.
        A::ScmpActNotify => return Err(Error::unavailable("SCMP_ACT_NOTIFY is not precompiled")),
    })
}

fn operator(op: LinuxSeccompOperator) -> c_uint {
    use LinuxSeccompOperator as O;
    match op {
        O::ScmpCmpNe => 1,
        O::ScmpCmpLt => 2,
        O::ScmpCmpLe => 3,
        O::ScmpCmpEq => 4,
        O::ScmpCmpGe => 5,
        O::ScmpCmpGt => 6,
        O::ScmpCmpMaskedEq => 7,
    }
}

/// The libseccomp name of an OCI architecture (`SCMP_ARCH_X86_64` →
/// `x86_64`), from its JSON spelling.
fn arch_name(arch: &oci_spec::runtime::Arch) -> Result<CString> {
    let json = serde_json::to_value(arch).map_err(|e| Error::internal(e.to_string()))?;
    let name = json
        .as_str()
        .and_then(|s| s.strip_prefix("SCMP_ARCH_"))
        .ok_or_else(|| Error::internal(format!("unexpected architecture {json}")))?;
    Ok(CString::new(name.to_ascii_lowercase()).expect("no NUL in an architecture name"))
}

/// Frees the filter context however compile returns.
struct Filter<'a> {
    lib: &'a Libseccomp,
    ctx: Ctx,
}

impl Drop for Filter<'_> {
    fn drop(&mut self) {
        // SAFETY: ctx came from seccomp_init and is released once.
        unsafe { (self.lib.release)(self.ctx) }
    }
}

/// Compiles `profile` to BPF (the `struct sock_filter` array the kernel
/// loads) with libseccomp, translating it as crun does: the default action
/// with `defaultErrnoRet`, each listed architecture added, syscalls the
/// library does not know skipped, rules whose action is the default one
/// skipped, and the conditions of a rule that tests one argument more than
/// once added as separate rules.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<u8>> {
    if profile.flags().as_ref().is_some_and(|f| !f.is_empty()) || profile.listener_path().is_some()
    {
        return Err(Error::unavailable(
            "seccomp flags and listeners are not precompiled",
        ));
    }
    let lib = libseccomp()?;
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let fail = |what: &str, rc: c_int| {
        Error::internal(format!(
            "libseccomp {what}: {}",
            std::io::Error::from_raw_os_error(-rc)
        ))
    };
    // SAFETY: seccomp_init returns an owned context or NULL.
    let ctx = unsafe { (lib.init)(default) };
    if ctx.is_null() {
        return Err(Error::internal("libseccomp: seccomp_init failed"));
    }
    let filter = Filter { lib, ctx };
    for arch in profile.architectures().iter().flatten() {
        let name = arch_name(arch)?;
        // SAFETY: NUL-terminated name; a live context.
        let token = unsafe { (lib.arch_resolve_name)(name.as_ptr()) };
        if token == 0 {
            return Err(Error::unavailable(format!(
                "libseccomp does not know architecture {name:?}"
            )));
        }
        // SAFETY: as above. EEXIST is the native architecture, already in.
        let rc = unsafe { (lib.arch_add)(filter.ctx, token) };
        if rc < 0 && rc != -libc::EEXIST {
            return Err(fail("arch_add", rc));
        }
    }
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let args: Vec<ArgCmp> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| ArgCmp {
                arg: a.index() as c_uint,
                op: operator(a.op()),
                datum_a: a.value(),
                datum_b: a.value_two().unwrap_or(0),
            })
            .collect();
        let repeats_an_arg = args
            .iter()
            .enumerate()
            .any(|(i, a)| args[..i].iter().any(|b| b.arg == a.arg));
        let groups: Vec<&[ArgCmp]> = if repeats_an_arg {
            args.chunks(1).collect()
        } else {
            vec![&args[..]]
        };
        for name in rule.names() {
            let Ok(cname) = CString::new(name.as_str()) else {
                continue;
            };
            // SAFETY: NUL-terminated name.
            let nr = unsafe { (lib.syscall_resolve_name)(cname.as_ptr()) };
            if nr < 0 {
                continue;
            }
            for group in &groups {
                // SAFETY: a live context; `group` outlives the call.
                let rc = unsafe {
                    (lib.rule_add_array)(filter.ctx, act, nr, group.len() as c_uint, group.as_ptr())
                };
                if rc < 0 {
                    return Err(fail(&format!("rule for {name}"), rc));
                }
            }
        }
    }
    export(&filter)
}

/// The filter's BPF, through a memfd (libseccomp writes to an fd).
fn export(filter: &Filter) -> Result<Vec<u8>> {
    // SAFETY: plain syscall with a static name; the fd is owned below.
    let fd = unsafe { libc::memfd_create(c"seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: fd is fresh and ours.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // SAFETY: a live context and an open fd.
    let rc = unsafe { (filter.lib.export_bpf)(filter.ctx, file.as_raw_fd()) };
    if rc < 0 {
        return Err(Error::internal(format!(
            "libseccomp export: {}",
            std::io::Error::from_raw_os_error(-rc)
        )));
    }
    let mut bpf = Vec::new();
    file.rewind()?;
    file.read_to_end(&mut bpf)?;
    check_bpf(&bpf)?;
    Ok(bpf)
}

/// A whole, non-empty array of 8-byte `sock_filter` instructions.
fn check_bpf(bpf: &[u8]) -> Result<()> {
    if bpf.is_empty() || !bpf.len().is_multiple_of(8) {
        return Err(Error::internal(format!(
            "seccomp BPF of {} bytes is not a filter",
            bpf.len()
        )));
    }
    Ok(())
}

/// The cache key: SHA-256 of the resolved profile's JSON, so RuntimeDefault
/// and every Localhost file are told apart by content.
pub fn profile_key(profile: &LinuxSeccomp) -> String {
    let json = serde_json::to_vec(profile).expect("a seccomp profile serializes");
    Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compiled filters by profile key, in memory and as `<dir>/<key>.bpf`.
/// The files are a cache only (recovery never reads them), so they are
/// written by rename and never fsynced; a file that is not a whole filter
/// is recompiled over.
pub struct BpfCache {
    dir: Option<PathBuf>,
    entries: Mutex<HashMap<String, Arc<str>>>,
}

impl BpfCache {
    pub fn new(dir: Option<PathBuf>) -> BpfCache {
        BpfCache {
            dir,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The base64 BPF of `profile`, compiled on first use; an error when it
    /// cannot be precompiled (the caller then leaves it to the runtime).
    pub fn get(&self, profile: &LinuxSeccomp) -> Result<Arc<str>> {
        let key = profile_key(profile);
        if let Some(b) = self.entries.lock().unwrap().get(&key) {
            return Ok(b.clone());
        }
        let bpf = match self.read(&key) {
            Some(bpf) => bpf,
            None => {
                let bpf = compile(profile)?;
                self.write(&key, &bpf);
                bpf
            }
        };
        let encoded: Arc<str> = base64::engine::general_purpose::STANDARD
            .encode(&bpf)
            .into();
        self.entries.lock().unwrap().insert(key, encoded.clone());
        Ok(encoded)
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{key}.bpf")))
    }

    fn read(&self, key: &str) -> Option<Vec<u8>> {
        let bpf = std::fs::read(self.path(key)?).ok()?;
        check_bpf(&bpf).ok()?;
        Some(bpf)
    }

    fn write(&self, key: &str, bpf: &[u8]) {
        let (Some(dir), Some(path)) = (&self.dir, self.path(key)) else {
            return;
        };
        let tmp = dir.join(format!(".{key}.{}", std::process::id()));
        let done = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&tmp, bpf))
            .and_then(|_| std::fs::rename(&tmp, &path));
        // A failed write costs a compile after the next restart, nothing
        // more: the filter is in memory either way.
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Moves `spec`'s profile into the precompiled annotation: `Ok(true)`
    /// when it did, `Ok(false)` when the spec has no profile, and the reason
    /// when the profile cannot be precompiled (it then stays in the spec for
    /// the runtime to compile, as before).
    pub fn precompile(&self, spec: &mut Spec) -> Result<bool> {
        let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
            return Ok(false);
        };
        let bpf = self.get(&profile)?;
        let mut annotations = spec.annotations().clone().unwrap_or_default();
        annotations.insert(BPF_ANNOTATION.to_string(), bpf.to_string());
        spec.set_annotations(Some(annotations));
        if let Some(linux) = spec.linux_mut() {
            linux.set_seccomp(None);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Capabilities, LinuxBuilder, LinuxSeccompFilterFlag, SpecBuilder};

    fn default_profile() -> LinuxSeccomp {
        crate::seccomp::default_profile(&Capabilities::new())
    }

    fn decode(b: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(b).unwrap()
    }

    #[test]
    fn cached_filter_is_a_fresh_compile() {
        let profile = default_profile();
        let fresh = compile(&profile).unwrap();
        // Docker's default is hundreds of instructions, not a stub.
        assert!(fresh.len() / 8 > 100, "{} instructions", fresh.len() / 8);
        assert_eq!(
            compile(&profile).unwrap(),
            fresh,
            "compiles are deterministic"
        );

        let dir = tempfile::tempdir().unwrap();
        let cache = BpfCache::new(Some(dir.path().to_path_buf()));
        assert_eq!(decode(&cache.get(&profile).unwrap()), fresh);
        let file = dir.path().join(format!("{}.bpf", profile_key(&profile)));
        assert_eq!(
            std::fs::read(&file).unwrap(),
            fresh,
            "the file is the filter"
        );
        // A new process's cache reads the file: still the fresh compile.
        let reloaded = BpfCache::new(Some(dir.path().to_path_buf()));
        assert_eq!(decode(&reloaded.get(&profile).unwrap()), fresh);
        // A torn file is compiled over, never handed out.
        std::fs::write(&file, &fresh[..fresh.len() - 3]).unwrap();
        let torn = BpfCache::new(Some(dir.path().to_path_buf()));
        assert_eq!(decode(&torn.get(&profile).unwrap()), fresh);
    }

    #[test]
    fn distinct_profiles_get_distinct_filters() {
        let strict = default_profile();
        let mut loose = strict.clone();
        loose.set_syscalls(None);
        assert_ne!(profile_key(&strict), profile_key(&loose));
        let cache = BpfCache::new(None);
        assert_ne!(cache.get(&strict).unwrap(), cache.get(&loose).unwrap());
    }

    fn spec_with(profile: LinuxSeccomp) -> Spec {
        let linux = LinuxBuilder::default().seccomp(profile).build().unwrap();
        SpecBuilder::default().linux(linux).build().unwrap()
    }

    #[test]
    fn precompile_moves_the_profile_into_the_annotation() {
        let profile = default_profile();
        let mut spec = spec_with(profile.clone());
        assert!(BpfCache::new(None).precompile(&mut spec).unwrap());
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
        let annotation = &spec.annotations().as_ref().unwrap()[BPF_ANNOTATION];
        assert_eq!(decode(annotation), compile(&profile).unwrap());
    }

    #[test]
    fn flags_stay_with_the_runtime() {
        let mut profile = default_profile();
        profile.set_flags(Some(vec![LinuxSeccompFilterFlag::SeccompFilterFlagLog]));
        let mut spec = spec_with(profile.clone());
        let err = BpfCache::new(None).precompile(&mut spec).unwrap_err();
        assert!(err.to_string().contains("flags"), "{err}");
        assert_eq!(
            spec.linux().as_ref().unwrap().seccomp().as_ref(),
            Some(&profile)
        );
        assert!(!spec
            .annotations()
            .iter()
            .flatten()
            .any(|(k, _)| k == BPF_ANNOTATION));
    }
}
