//! Unpacking one OCI layer into its own snapshot directory, safely.
//!
//! Each layer is unpacked in isolation into an empty directory that later
//! becomes an overlayfs lowerdir, so:
//! - OCI whiteouts (`dir/.wh.name`) become overlayfs whiteouts (a character
//!   device 0:0 at `dir/name`) and opaque markers (`dir/.wh..wh..opq`) the
//!   `trusted.overlay.opaque=y` xattr on `dir`;
//! - nothing may be created or changed outside the directory: absolute
//!   paths, `..`, parents that are symlinks, and hardlinks to anything that
//!   is not already in this layer reject the whole layer, naming the entry.
//!   Symlinks themselves are kept verbatim (they are resolved inside the
//!   container, not here), and no path is ever opened through one: every
//!   parent directory is checked with `lstat` (and remembered), files are
//!   opened `O_NOFOLLOW|O_EXCL`, and metadata is set with the `l*`/`f*`
//!   calls.
//!
//! Ownership, modes (with setuid/setgid/sticky), times and `SCHILY.xattr.*`
//! PAX xattrs are kept. Directory times are set last, once their children
//! are in place.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use berth_errdefs::{Error, ErrorKind, Result};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{futimens, makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tar::EntryType;
use xattr::FileExt as _;

/// What a layer takes on disk once unpacked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Allocated bytes (`st_blocks * 512`) of everything written, each inode
    /// counted once.
    pub bytes: u64,
    /// Inodes written (files, directories, links, devices, whiteouts).
    pub inodes: u64,
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`); only the opaque
/// marker among these means anything to a layer.
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// overlayfs's own xattrs: only whiteouts may speak to overlayfs, so a
/// layer's PAX headers cannot set redirects, metacopy and the like.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// File contents are copied through this; large enough that a decompressor
/// and the page cache see big reads and writes.
const COPY_BUFFER: usize = 512 * 1024;
/// The tar reader holds a PAX header or a GNU long name or link in memory
/// whole; longer ones are refused first, at Go's archive/tar limit (which
/// writes most layers).
pub const MAX_TAR_METADATA: u64 = 1 << 20;
const BLOCK: usize = 512;

/// Unpacks the uncompressed tar stream of one layer into `dest`, an existing
/// empty directory. Any entry that would reach outside `dest` rejects the
/// whole layer with `InvalidArgument` naming it; the caller then deletes
/// `dest`.
pub fn unpack_layer<R: Read>(tar_stream: R, dest: &Path) -> Result<UnpackStats> {
    let mut archive = tar::Archive::new(MetadataGuard::new(tar_stream));
    let mut unpacker = Unpacker {
        dest,
        known_dirs: HashSet::new(),
        dir_times: HashMap::new(),
        buffer: vec![0; COPY_BUFFER],
        is_root: nix::unistd::geteuid().is_root(),
    };
    let entries = archive.entries().map_err(|e| stream_error(None, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| stream_error(None, e))?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish()
}

/// Follows the tar stream on its way to the tar reader and refuses a
/// metadata entry (PAX header, GNU long name or link) longer than
/// [`MAX_TAR_METADATA`] before the reader buffers it. It walks the archive
/// as the `tar` crate does: headers, GNU sparse extension blocks, data
/// padded to 512 bytes, a PAX `size` overriding the next entry's size, and
/// the end at the first zero block. The bytes pass unchanged.
struct MetadataGuard<R> {
    inner: R,
    /// The header or extension block being gathered.
    block: [u8; BLOCK],
    filled: usize,
    state: GuardState,
    /// The PAX header being gathered, and its length, to find `size`.
    pax: Option<(Vec<u8>, usize)>,
    /// A PAX `size` for the next entry that is not itself metadata.
    pending_size: Option<u64>,
    /// Why the stream was refused; every later read fails too.
    refused: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GuardState {
    Header,
    SparseExtension {
        data: u64,
    },
    Data {
        remaining: u64,
    },
    /// Past the end, or lost in a malformed header the tar reader refuses
    /// itself: nothing more to check.
    Done,
}

impl<R> MetadataGuard<R> {
    fn new(inner: R) -> Self {
        MetadataGuard {
            inner,
            block: [0; BLOCK],
            filled: 0,
            state: GuardState::Header,
            pax: None,
            pending_size: None,
            refused: None,
        }
    }

    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.refused.is_none() {
            match self.state {
                GuardState::Done => return,
                GuardState::Header | GuardState::SparseExtension { .. } => {
                    let n = (BLOCK - self.filled).min(bytes.len());
                    self.block[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
                    self.filled += n;
                    bytes = &bytes[n..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.state = match self.state {
                            GuardState::SparseExtension { data } => self.after_extension(data),
                            _ => self.after_header(),
                        };
                    }
                }
                GuardState::Data { remaining } => {
                    let n = remaining.min(bytes.len() as u64) as usize;
                    if let Some((pax, len)) = &mut self.pax {
                        let wanted = (*len - pax.len()).min(n);
                        pax.extend_from_slice(&bytes[..wanted]);
                    }
                    bytes = &bytes[n..];
                    self.state = GuardState::Data {
                        remaining: remaining - n as u64,
                    };
                    if remaining == n as u64 {
                        self.end_of_data();
                    }
                }
            }
        }
    }

    /// What follows the header now in `block`.
    fn after_header(&mut self) -> GuardState {
        if self.block.iter().all(|&b| b == 0) {
            return GuardState::Done; // the tar reader stops here
        }
        let h = tar::Header::from_byte_slice(&self.block);
        let Ok(header_size) = h.entry_size() else {
            return GuardState::Done;
        };
        let kind = h.entry_type();
        let recognized = h.as_gnu().is_some() || h.as_ustar().is_some();
        let long_name = kind.is_gnu_longname() || kind.is_gnu_longlink();
        let metadata =
            long_name || kind.is_pax_local_extensions() || kind.is_pax_global_extensions();
        // As the tar reader reads it: a pending PAX size applies to the next
        // entry that is not metadata, and is used up by the next entry it
        // returns (anything but a recognized long name or PAX header).
        let size = if metadata {
            header_size
        } else {
            self.pending_size.unwrap_or(header_size)
        };
        if !(recognized && (long_name || kind.is_pax_local_extensions())) {
            self.pending_size = None;
        }
        if metadata && size > MAX_TAR_METADATA {
            let what = if long_name {
                "a GNU long name or link"
            } else {
                "a PAX header"
            };
            self.refused = Some(format!(
                "{what} of {size} bytes; at most {} are allowed",
                crate::limits::show_bytes(MAX_TAR_METADATA)
            ));
            return GuardState::Done;
        }
        if recognized && kind.is_pax_local_extensions() {
            self.pax = Some((Vec::with_capacity(size as usize), size as usize));
        }
        let sparse_extended = kind.is_gnu_sparse() && h.as_gnu().is_some_and(|g| g.is_extended());
        if sparse_extended {
            GuardState::SparseExtension { data: size }
        } else {
            self.data(size)
        }
    }

    fn after_extension(&mut self, data: u64) -> GuardState {
        // `isextended`: another extension block follows.
        if self.block[504] != 0 {
            GuardState::SparseExtension { data }
        } else {
            self.data(data)
        }
    }

    fn data(&mut self, size: u64) -> GuardState {
        match size.checked_next_multiple_of(BLOCK as u64) {
            Some(0) => {
                self.end_of_data();
                GuardState::Header
            }
            Some(padded) => GuardState::Data { remaining: padded },
            None => GuardState::Done, // the tar reader refuses it
        }
    }

    fn end_of_data(&mut self) {
        self.state = GuardState::Header;
        if let Some((pax, _)) = self.pax.take() {
            self.pending_size = pax_size(&pax);
        }
    }
}

/// The `size` record of a PAX header, read as the tar crate reads it.
fn pax_size(pax: &[u8]) -> Option<u64> {
    for record in tar::PaxExtensions::new(pax) {
        let record = record.ok()?;
        if record.key() == Ok("size") {
            return record.value().ok()?.parse().ok();
        }
    }
    None
}

impl<R: Read> Read for MetadataGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.refused.is_none() {
            let n = self.inner.read(buf)?;
            self.observe(&buf[..n]);
            if self.refused.is_none() {
                return Ok(n);
            }
        }
        Err(io::Error::other(self.refused.clone().unwrap_or_default()))
    }
}

struct Unpacker<'a> {
    dest: &'a Path,
    /// Paths (relative to `dest`) known to be real directories, not
    /// symlinks. Everything under a path is forgotten when it is replaced.
    known_dirs: HashSet<PathBuf>,
    /// Directory times to set once all entries are in: (atime, mtime).
    dir_times: HashMap<PathBuf, (TimeSpec, TimeSpec)>,
    buffer: Vec<u8>,
    is_root: bool,
}

/// An entry's metadata from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An entry name as it appears in messages: quoted, lossily decoded.
struct Shown<'a>(&'a [u8]);

impl fmt::Display for Shown<'_> {
    /// Cut short: names can be up to a PAX header long.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::limits::quote(self.0))
    }
}

fn escapes(raw: &[u8], why: impl fmt::Display) -> Error {
    Error::invalid(format!(
        "layer entry {} escapes the snapshot: {why}",
        Shown(raw)
    ))
}

fn malformed(raw: &[u8], why: impl fmt::Display) -> Error {
    Error::invalid(format!("layer entry {}: {why}", Shown(raw)))
}

/// A failure of the local filesystem while writing an entry.
fn os_error(raw: &[u8], what: &str, e: io::Error) -> Error {
    let kind = match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => ErrorKind::ResourceExhausted,
        Some(libc::EPERM | libc::EACCES) => ErrorKind::PermissionDenied,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, format!("layer entry {}: {what}: {e}", Shown(raw)))
}

/// A failure reading the tar stream: malformed data unless the OS said
/// otherwise (e.g. a full disk under the caller's reader).
fn stream_error(raw: Option<&[u8]>, e: io::Error) -> Error {
    let kind = match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => ErrorKind::ResourceExhausted,
        Some(_) => ErrorKind::Internal,
        None => ErrorKind::InvalidArgument,
    };
    let message = match raw {
        Some(raw) => format!("layer entry {}: read contents: {e}", Shown(raw)),
        None => format!("read layer tar: {e}"),
    };
    Error::new(kind, message)
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// A path in the layer made relative to its root: `./` and `//` dropped,
/// absolute paths and `..` refused. `raw` is the entry's own name, or with
/// `link` its hardlink target.
fn relative(raw: &[u8], link: Option<&[u8]>) -> Result<PathBuf> {
    let path = link.unwrap_or(raw);
    let subject = match link {
        Some(target) => format!("hardlink target {} ", Shown(target)),
        None => "it ".to_string(),
    };
    if path.contains(&0) {
        return Err(malformed(raw, format_args!("{subject}contains a NUL byte")));
    }
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(path)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(escapes(raw, format_args!("{subject}is an absolute path")))
            }
            Component::ParentDir => {
                return Err(escapes(raw, format_args!("{subject}contains \"..\"")))
            }
        }
    }
    Ok(out)
}

/// A numeric header field. An empty one (all NULs or spaces) is 0, as Go's
/// archive/tar, which writes most layers, reads it.
fn numeric(raw: &[u8], name: &str, field: &[u8], parsed: io::Result<u64>) -> Result<u64> {
    if field.iter().all(|&b| b == 0 || b == b' ') {
        return Ok(0);
    }
    parsed.map_err(|e| malformed(raw, format_args!("bad {name} field: {e}")))
}

/// A PAX time: `[-]seconds[.fraction]`.
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(value).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: i64 = whole.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, b) in fraction.bytes().take(9).enumerate() {
        nanos += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(if !negative {
        TimeSpec::new(seconds, nanos)
    } else if nanos == 0 {
        TimeSpec::new(-seconds, 0)
    } else {
        TimeSpec::new(-seconds - 1, 1_000_000_000 - nanos)
    })
}

impl Meta {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<Meta> {
        let header = entry.header();
        let old = header.as_old();
        let mode = numeric(raw, "mode", &old.mode, header.mode().map(u64::from))? as u32 & 0o7777;
        let id = |name: &str, v: u64| {
            u32::try_from(v).map_err(|_| malformed(raw, format_args!("{name} {v} is out of range")))
        };
        let uid = id("uid", numeric(raw, "uid", &old.uid, header.uid())?)?;
        let gid = id("gid", numeric(raw, "gid", &old.gid, header.gid())?)?;
        let seconds = numeric(raw, "mtime", &old.mtime, header.mtime())?;
        let mut mtime = TimeSpec::new(i64::try_from(seconds).unwrap_or(i64::MAX), 0);
        let mut atime = None;
        let mut xattrs = Vec::new();
        let pax = entry
            .pax_extensions()
            .map_err(|e| malformed(raw, format_args!("bad PAX header: {e}")))?;
        if let Some(pax) = pax {
            for ext in pax {
                let ext = ext.map_err(|e| malformed(raw, format_args!("bad PAX record: {e}")))?;
                let key = ext.key_bytes();
                if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                } else if key == b"mtime" {
                    mtime = parse_pax_time(ext.value_bytes())
                        .ok_or_else(|| malformed(raw, "bad PAX mtime"))?;
                } else if key == b"atime" {
                    atime = Some(
                        parse_pax_time(ext.value_bytes())
                            .ok_or_else(|| malformed(raw, "bad PAX atime"))?,
                    );
                } else if key.starts_with(b"GNU.sparse.") {
                    // The tar reader would hand over the sparse map as data.
                    return Err(malformed(raw, "PAX-format sparse files are not supported"));
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            atime: atime.unwrap_or(mtime),
            mtime,
            xattrs,
        })
    }
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(()); // metadata the tar reader has already applied
        }
        let raw = entry.path_bytes().into_owned();
        let rel = relative(&raw, None)?;
        let Some(base) = rel.file_name() else {
            return Ok(()); // the layer's root, "./": the snapshot keeps its own
        };
        let base = base.as_bytes();
        let parent_rel = rel.parent().unwrap_or(Path::new(""));

        if base == OPAQUE_MARKER {
            self.ensure_dir(parent_rel, &raw)?;
            let dir = self.dest.join(parent_rel);
            return xattr::set(&dir, OPAQUE_XATTR, b"y")
                .map_err(|e| os_error(&raw, "mark the directory opaque", e));
        }
        let first = rel.iter().next().map_or(&b""[..], |c| c.as_bytes());
        if base.starts_with(WHITEOUT_META_PREFIX) || first.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(()); // aufs bookkeeping, meaningless to overlayfs
        }
        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(parent_rel, hidden, &raw);
        }

        let meta = Meta::read(entry, &raw)?;
        self.ensure_dir(parent_rel, &raw)?;
        let full = self.dest.join(&rel);
        match kind {
            EntryType::Directory => self.directory(&rel, &full, &meta, &raw),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.regular(entry, kind, &rel, &full, &meta, &raw)
            }
            EntryType::Symlink => self.symlink(entry, &rel, &full, &meta, &raw),
            EntryType::Link => self.hardlink(entry, &rel, &full, &raw),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.special(entry, kind, &rel, &full, &meta, &raw)
            }
            other => Err(malformed(
                &raw,
                format_args!(
                    "unsupported tar entry type {:?}",
                    char::from(other.as_byte())
                ),
            )),
        }
    }

    /// `dir/.wh.name`: a 0:0 character device at `dir/name`. Something this
    /// layer itself put at `dir/name` already hides the lower layers' file,
    /// and whiteouts only apply to lower layers, so it stays.
    fn whiteout(&mut self, parent_rel: &Path, hidden: &[u8], raw: &[u8]) -> Result<()> {
        match hidden {
            b".." => return Err(escapes(raw, "it whites out \"..\"")),
            b"" | b"." => return Err(malformed(raw, "not a valid whiteout name")),
            _ => {}
        }
        self.ensure_dir(parent_rel, raw)?;
        let target = self.dest.join(parent_rel).join(OsStr::from_bytes(hidden));
        match mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(os_error(raw, "create whiteout", e.into())),
        }
    }

    /// Makes sure `rel` is a real directory inside the layer, creating
    /// missing ones, and refusing symlinks and other non-directories.
    fn ensure_dir(&mut self, rel: &Path, raw: &[u8]) -> Result<()> {
        if rel.as_os_str().is_empty() || self.known_dirs.contains(rel) {
            return Ok(());
        }
        let mut cur = PathBuf::with_capacity(rel.as_os_str().len());
        for c in rel.iter() {
            cur.push(c);
            if self.known_dirs.contains(&cur) {
                continue;
            }
            let full = self.dest.join(&cur);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(escapes(
                        raw,
                        format_args!(
                            "its parent {} is a symlink",
                            Shown(cur.as_os_str().as_bytes())
                        ),
                    ))
                }
                Ok(m) if is_whiteout(&m) => {
                    // The layer whited out a directory and then put things
                    // in it: the new directory hides the lower one.
                    fs::remove_file(&full).map_err(|e| os_error(raw, "replace whiteout", e))?;
                    make_implicit_dir(&full, raw)?;
                    xattr::set(&full, OPAQUE_XATTR, b"y")
                        .map_err(|e| os_error(raw, "mark the directory opaque", e))?;
                }
                Ok(_) => {
                    return Err(malformed(
                        raw,
                        format_args!(
                            "its parent {} is not a directory",
                            Shown(cur.as_os_str().as_bytes())
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => make_implicit_dir(&full, raw)?,
                Err(e) => return Err(os_error(raw, "inspect parent directory", e)),
            }
            self.known_dirs.insert(cur.clone());
        }
        Ok(())
    }

    /// Runs `make`; if something is in the way, removes it (a later entry
    /// replaces an earlier one) and runs `make` again.
    fn create<T>(
        &mut self,
        rel: &Path,
        full: &Path,
        raw: &[u8],
        what: &str,
        mut make: impl FnMut() -> io::Result<T>,
    ) -> Result<T> {
        match make() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove(rel, full, raw)?;
                make().map_err(|e| os_error(raw, what, e))
            }
            other => other.map_err(|e| os_error(raw, what, e)),
        }
    }

    /// Removes whatever is at `rel`, never following a symlink.
    fn remove(&mut self, rel: &Path, full: &Path, raw: &[u8]) -> Result<()> {
        let m = match fs::symlink_metadata(full) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(os_error(raw, "inspect existing path", e)),
        };
        if m.is_dir() {
            fs::remove_dir_all(full).map_err(|e| os_error(raw, "replace directory", e))?;
            self.known_dirs.retain(|d| !d.starts_with(rel));
            self.dir_times.retain(|d, _| !d.starts_with(rel));
        } else {
            fs::remove_file(full).map_err(|e| os_error(raw, "replace existing file", e))?;
        }
        Ok(())
    }

    fn directory(&mut self, rel: &Path, full: &Path, meta: &Meta, raw: &[u8]) -> Result<()> {
        let mut opaque = false;
        match DirBuilder::new().mode(0o700).create(full) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let m = fs::symlink_metadata(full)
                    .map_err(|e| os_error(raw, "inspect existing path", e))?;
                if !m.is_dir() {
                    // A directory entry over a whiteout of this same layer
                    // replaces the lower directory rather than merging.
                    opaque = is_whiteout(&m);
                    fs::remove_file(full).map_err(|e| os_error(raw, "replace existing file", e))?;
                    DirBuilder::new()
                        .mode(0o700)
                        .create(full)
                        .map_err(|e| os_error(raw, "create directory", e))?;
                }
            }
            Err(e) => return Err(os_error(raw, "create directory", e)),
        }
        self.chown(
            std::os::unix::fs::lchown(full, Some(meta.uid), Some(meta.gid)),
            raw,
        )?;
        fs::set_permissions(full, fs::Permissions::from_mode(meta.mode))
            .map_err(|e| os_error(raw, "chmod", e))?;
        if opaque {
            xattr::set(full, OPAQUE_XATTR, b"y")
                .map_err(|e| os_error(raw, "mark the directory opaque", e))?;
        }
        apply_xattrs(&meta.xattrs, raw, |k, v| xattr::set(full, k, v))?;
        self.known_dirs.insert(rel.to_path_buf());
        self.dir_times
            .insert(rel.to_path_buf(), (meta.atime, meta.mtime));
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        rel: &Path,
        full: &Path,
        meta: &Meta,
        raw: &[u8],
    ) -> Result<()> {
        let mut file: File = self.create(rel, full, raw, "create file", || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(full)
        })?;
        let expected = entry.size();
        let mut written: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_error(Some(raw), e)),
            };
            file.write_all(&self.buffer[..n])
                .map_err(|e| os_error(raw, "write", e))?;
            written += n as u64;
        }
        // A sparse entry reads back longer than it is stored.
        if kind != EntryType::GNUSparse && written != expected {
            return Err(malformed(
                raw,
                format_args!("the layer ends after {written} of its {expected} bytes"),
            ));
        }
        // Owner before mode: chown clears setuid and setgid.
        self.chown(
            std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid)),
            raw,
        )?;
        file.set_permissions(fs::Permissions::from_mode(meta.mode))
            .map_err(|e| os_error(raw, "chmod", e))?;
        apply_xattrs(&meta.xattrs, raw, |k, v| file.set_xattr(k, v))?;
        futimens(file.as_raw_fd(), &meta.atime, &meta.mtime)
            .map_err(|e| os_error(raw, "set times", e.into()))
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        rel: &Path,
        full: &Path,
        meta: &Meta,
        raw: &[u8],
    ) -> Result<()> {
        let target = entry
            .link_name_bytes()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| malformed(raw, "a symlink without a target"))?;
        if target.contains(&0) {
            return Err(malformed(raw, "symlink target contains a NUL byte"));
        }
        // Kept verbatim: it is resolved inside the container's root.
        let target = OsStr::from_bytes(&target);
        self.create(rel, full, raw, "create symlink", || {
            std::os::unix::fs::symlink(target, full)
        })?;
        self.chown(
            std::os::unix::fs::lchown(full, Some(meta.uid), Some(meta.gid)),
            raw,
        )?;
        apply_xattrs(&meta.xattrs, raw, |k, v| xattr::set(full, k, v))?;
        set_times_nofollow(full, meta, raw)
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        rel: &Path,
        full: &Path,
        raw: &[u8],
    ) -> Result<()> {
        let target = entry
            .link_name_bytes()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| malformed(raw, "a hardlink without a target"))?;
        let target_rel = relative(raw, Some(&target))?;
        let shown_target = Shown(&target);
        if target_rel.as_os_str().is_empty() {
            return Err(malformed(raw, "a hardlink to the layer root"));
        }
        if target_rel == rel {
            return Ok(()); // a link to itself: already there
        }
        if target_rel.starts_with(rel) {
            return Err(malformed(
                raw,
                format_args!("a hardlink to {shown_target}, which it would replace"),
            ));
        }
        // The target's directories must be real ones inside this layer.
        let mut cur = PathBuf::new();
        if let Some(parent) = target_rel.parent() {
            for c in parent.iter() {
                cur.push(c);
                if self.known_dirs.contains(&cur) {
                    continue;
                }
                match fs::symlink_metadata(self.dest.join(&cur)) {
                    Ok(m) if m.is_dir() => {}
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(escapes(
                            raw,
                            format_args!(
                                "hardlink target {shown_target} goes through the symlink {}",
                                Shown(cur.as_os_str().as_bytes())
                            ),
                        ))
                    }
                    _ => {
                        return Err(malformed(
                            raw,
                            format_args!("hardlink target {shown_target} is not in this layer"),
                        ))
                    }
                }
            }
        }
        let source = self.dest.join(&target_rel);
        match fs::symlink_metadata(&source) {
            Ok(m) if m.is_dir() => {
                return Err(malformed(
                    raw,
                    format_args!("hardlink target {shown_target} is a directory"),
                ))
            }
            Ok(_) => {}
            Err(_) => {
                return Err(malformed(
                    raw,
                    format_args!("hardlink target {shown_target} is not in this layer"),
                ))
            }
        }
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        self.create(rel, full, raw, "create hardlink", || {
            nix::unistd::linkat(None, source.as_path(), None, full, AtFlags::empty())
                .map_err(io::Error::from)
        })
    }

    /// Character and block devices, and fifos.
    fn special<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        kind: EntryType,
        rel: &Path,
        full: &Path,
        meta: &Meta,
        raw: &[u8],
    ) -> Result<()> {
        let header = entry.header();
        // Old (v7) headers have no device fields: 0.
        let (major_field, minor_field) = match (header.as_ustar(), header.as_gnu()) {
            (Some(u), _) => (u.dev_major, u.dev_minor),
            (None, Some(g)) => (g.dev_major, g.dev_minor),
            (None, None) => ([0; 8], [0; 8]),
        };
        let number = |name: &str, field: &[u8], v: io::Result<Option<u32>>| {
            numeric(raw, name, field, v.map(|n| u64::from(n.unwrap_or(0))))
        };
        let (flag, dev) = match kind {
            EntryType::Char => (SFlag::S_IFCHR, None),
            EntryType::Block => (SFlag::S_IFBLK, None),
            _ => (SFlag::S_IFIFO, Some(0)),
        };
        let dev = match dev {
            Some(d) => d,
            None => makedev(
                number("device major", &major_field, header.device_major())?,
                number("device minor", &minor_field, header.device_minor())?,
            ),
        };
        let made = self.create(rel, full, raw, "create device node", || {
            mknod(full, flag, Mode::empty(), dev).map_err(io::Error::from)
        });
        match made {
            Ok(()) => {}
            // Without CAP_MKNOD (a user namespace, a device cgroup) device
            // nodes cannot be made; containers get /dev from the runtime
            // anyway, so the layer is still usable, as containerd has it.
            Err(e) if e.kind == ErrorKind::PermissionDenied && kind != EntryType::Fifo => {
                tracing::warn!(entry = %Shown(raw), error = %e, "skipping device node");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        self.chown(
            std::os::unix::fs::lchown(full, Some(meta.uid), Some(meta.gid)),
            raw,
        )?;
        // Not a symlink: it was just made.
        fs::set_permissions(full, fs::Permissions::from_mode(meta.mode))
            .map_err(|e| os_error(raw, "chmod", e))?;
        apply_xattrs(&meta.xattrs, raw, |k, v| xattr::set(full, k, v))?;
        set_times_nofollow(full, meta, raw)
    }

    /// Unprivileged runs (tests, rootless) cannot give files away; root
    /// must be able to.
    fn chown(&self, result: io::Result<()>, raw: &[u8]) -> Result<()> {
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && !self.is_root => Ok(()),
            other => other.map_err(|e| os_error(raw, "chown", e)),
        }
    }

    /// Sets directory times, now that nothing more is added to them, and
    /// measures what was written.
    fn finish(self) -> Result<UnpackStats> {
        for (rel, (atime, mtime)) in &self.dir_times {
            let full = self.dest.join(rel);
            utimensat(None, &full, atime, mtime, UtimensatFlags::NoFollowSymlink).map_err(|e| {
                os_error(rel.as_os_str().as_bytes(), "set directory times", e.into())
            })?;
        }
        disk_usage(self.dest)
    }
}

fn make_implicit_dir(full: &Path, raw: &[u8]) -> Result<()> {
    DirBuilder::new()
        .mode(0o755)
        .create(full)
        .map_err(|e| os_error(raw, "create parent directory", e))?;
    // Whatever the umask, as the tar would have it.
    fs::set_permissions(full, fs::Permissions::from_mode(0o755))
        .map_err(|e| os_error(raw, "chmod parent directory", e))
}

fn set_times_nofollow(full: &Path, meta: &Meta, raw: &[u8]) -> Result<()> {
    utimensat(
        None,
        full,
        &meta.atime,
        &meta.mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| os_error(raw, "set times", e.into()))
}

/// Applies PAX xattrs. Filesystems and kernels refuse some (`user.*` on
/// symlinks, `trusted.*` without privilege, anything on a filesystem
/// without xattrs): those are skipped, other failures are errors.
fn apply_xattrs(
    xattrs: &[(Vec<u8>, Vec<u8>)],
    raw: &[u8],
    set: impl Fn(&OsStr, &[u8]) -> io::Result<()>,
) -> Result<()> {
    for (name, value) in xattrs {
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            tracing::debug!(entry = %Shown(raw), xattr = %Shown(name), "ignoring overlayfs xattr");
            continue;
        }
        match set(OsStr::from_bytes(name), value) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP)) => {
                tracing::debug!(entry = %Shown(raw), xattr = %Shown(name), error = %e,
                    "xattr not applied");
            }
            Err(e) => return Err(os_error(raw, &format!("set xattr {}", Shown(name)), e)),
        }
    }
    Ok(())
}

/// Allocated bytes and inodes under `dir` (not counting `dir`), each
/// hardlinked inode once.
fn disk_usage(dir: &Path) -> Result<UnpackStats> {
    let measure = |p: &Path, e: io::Error| {
        Error::from(e).context(format!("measure snapshot {}", p.display()))
    };
    let mut seen = HashSet::new();
    let mut stats = UnpackStats::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(|e| measure(&d, e))? {
            let e = e.map_err(|e| measure(&d, e))?;
            // DirEntry::metadata does not follow symlinks.
            let m = e.metadata().map_err(|err| measure(&e.path(), err))?;
            if !m.is_dir() && m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            stats.inodes += 1;
            stats.bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::{major, minor};
    use std::collections::BTreeMap;
    use tar::{Builder, Header};

    const MTIME: u64 = 1_000_000;

    /// Tests of what only root can do (give files away, make devices, set
    /// trusted xattrs) fail without it rather than pass on less.
    fn needs_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root: run the suite as root"
        );
    }

    /// One PAX record: "<len> key=value\n", len counting itself.
    fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
        let base = key.len() + value.len() + 3;
        let mut len = base + 1;
        while base + len.to_string().len() != len {
            len += 1;
        }
        let mut out = format!("{len} ").into_bytes();
        out.extend_from_slice(key);
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
        out
    }

    /// A tar built entry by entry with raw headers, so that names the
    /// `tar` Builder would refuse (`..`, absolute) can be written.
    struct Layer {
        b: Builder<Vec<u8>>,
        pax: Vec<u8>,
    }

    impl Layer {
        fn new() -> Self {
            Layer {
                b: Builder::new(Vec::new()),
                pax: Vec::new(),
            }
        }

        /// PAX records for the next entry.
        fn pax(mut self, key: &str, value: &[u8]) -> Self {
            self.pax.extend(pax_record(key.as_bytes(), value));
            self
        }

        fn entry(
            mut self,
            name: &str,
            kind: EntryType,
            link: &str,
            data: &[u8],
            edit: impl FnOnce(&mut Header),
        ) -> Self {
            if name.len() > 100 {
                self.pax.extend(pax_record(b"path", name.as_bytes()));
            }
            if link.len() > 100 {
                self.pax.extend(pax_record(b"linkpath", link.as_bytes()));
            }
            if !self.pax.is_empty() {
                let records = std::mem::take(&mut self.pax);
                let mut h = Header::new_ustar();
                h.as_old_mut().name[..11].copy_from_slice(b"PaxHeader/x");
                h.set_entry_type(EntryType::XHeader);
                h.set_size(records.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                self.b.append(&h, &records[..]).unwrap();
            }
            let mut h = Header::new_ustar();
            let n = name.len().min(100);
            h.as_old_mut().name[..n].copy_from_slice(&name.as_bytes()[..n]);
            let l = link.len().min(100);
            h.as_old_mut().linkname[..l].copy_from_slice(&link.as_bytes()[..l]);
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind == EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(MTIME);
            edit(&mut h);
            h.set_cksum();
            self.b.append(&h, data).unwrap();
            self
        }

        fn file(self, name: &str, data: &[u8]) -> Self {
            self.entry(name, EntryType::Regular, "", data, |_| {})
        }

        fn file_with(self, name: &str, data: &[u8], edit: impl FnOnce(&mut Header)) -> Self {
            self.entry(name, EntryType::Regular, "", data, edit)
        }

        fn dir(self, name: &str, mode: u32) -> Self {
            self.entry(name, EntryType::Directory, "", b"", |h| h.set_mode(mode))
        }

        fn symlink(self, name: &str, target: &str) -> Self {
            self.entry(name, EntryType::Symlink, target, b"", |h| h.set_mode(0o777))
        }

        fn hardlink(self, name: &str, target: &str) -> Self {
            self.entry(name, EntryType::Link, target, b"", |_| {})
        }

        fn bytes(self) -> Vec<u8> {
            self.b.into_inner().unwrap()
        }
    }

    /// A scratch area: `outer/dest` is unpacked into, `outer/victim` (with
    /// `victim/passwd`) stands for everything a layer must not touch.
    struct Scratch {
        outer: tempfile::TempDir,
    }

    impl Scratch {
        fn new() -> Self {
            let outer = tempfile::tempdir().unwrap();
            fs::create_dir(outer.path().join("dest")).unwrap();
            fs::create_dir(outer.path().join("victim")).unwrap();
            fs::write(outer.path().join("victim/passwd"), b"root:x:0:0").unwrap();
            Scratch { outer }
        }

        fn dest(&self) -> PathBuf {
            self.outer.path().join("dest")
        }

        fn victim(&self) -> PathBuf {
            self.outer.path().join("victim")
        }

        fn unpack(&self, layer: Layer) -> Result<UnpackStats> {
            unpack_layer(&layer.bytes()[..], &self.dest())
        }

        /// Everything outside `dest`, with the metadata a layer could change.
        fn outside(&self) -> BTreeMap<PathBuf, String> {
            let mut out = BTreeMap::new();
            let mut stack = vec![self.outer.path().to_path_buf()];
            while let Some(d) = stack.pop() {
                for e in fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    if p == self.dest() {
                        continue;
                    }
                    let m = fs::symlink_metadata(&p).unwrap();
                    let xattrs: Vec<_> = xattr::list(&p).unwrap().collect();
                    let content = if m.is_file() {
                        fs::read(&p).unwrap()
                    } else {
                        Vec::new()
                    };
                    out.insert(
                        p.clone(),
                        format!(
                            "{:o} {}:{} n{} {} {:?} {:?}",
                            m.mode(),
                            m.uid(),
                            m.gid(),
                            m.nlink(),
                            m.mtime(),
                            xattrs,
                            content
                        ),
                    );
                    if m.is_dir() {
                        stack.push(p);
                    }
                }
            }
            out
        }
    }

    /// Unpacks `layer`, expecting InvalidArgument naming `entry`, and that
    /// nothing outside `dest` changed.
    fn refused(build: impl FnOnce(&Scratch) -> Layer, entry: &str) -> String {
        let s = Scratch::new();
        let before = s.outside();
        let layer = build(&s);
        let e = s.unpack(layer).expect_err("must be refused");
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert!(
            e.message.starts_with(&format!("layer entry {entry:?}")),
            "names {entry:?}: {e}"
        );
        assert_eq!(s.outside(), before, "nothing outside dest changed: {e}");
        e.message
    }

    fn lstat(p: impl AsRef<Path>) -> fs::Metadata {
        fs::symlink_metadata(p).unwrap()
    }

    #[test]
    fn files_directories_and_symlinks() {
        let s = Scratch::new();
        let layer = Layer::new()
            .dir("./", 0o755)
            .dir("./bin/", 0o755)
            .file("./bin/busybox", b"binary")
            .symlink("./bin/sh", "busybox")
            .symlink("./bin/abs", "/bin/busybox")
            .symlink("./bin/up", "../../../../etc/passwd")
            .file("etc//hostname", b"host\n")
            .file("deep/new/file.txt", b"x")
            .file("empty", b"");
        s.unpack(layer).unwrap();
        let d = s.dest();
        assert_eq!(fs::read(d.join("bin/busybox")).unwrap(), b"binary");
        assert_eq!(
            fs::read_link(d.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_link(d.join("bin/abs")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert_eq!(
            fs::read_link(d.join("bin/up")).unwrap(),
            Path::new("../../../../etc/passwd")
        );
        assert_eq!(fs::read(d.join("etc/hostname")).unwrap(), b"host\n");
        assert_eq!(fs::read(d.join("deep/new/file.txt")).unwrap(), b"x");
        assert_eq!(fs::read(d.join("empty")).unwrap(), b"");
        // Directories made for parents the tar never listed.
        assert_eq!(lstat(d.join("deep/new")).mode() & 0o7777, 0o755);
        assert!(!d.join(".wh.").exists());
    }

    #[test]
    fn modes_owners_and_special_bits_are_kept() {
        needs_root();
        let s = Scratch::new();
        let layer = Layer::new()
            .file_with("suid", b"s", |h| {
                h.set_mode(0o4755);
                h.set_uid(1000);
                h.set_gid(2000);
            })
            .file_with("sgid", b"g", |h| {
                h.set_mode(0o2711);
                h.set_gid(50);
            })
            .file_with("open", b"o", |h| h.set_mode(0o777))
            .file_with("closed", b"c", |h| h.set_mode(0o000))
            .dir("tmp/", 0o1777)
            .entry("home/user/", EntryType::Directory, "", b"", |h| {
                h.set_mode(0o2750);
                h.set_uid(1000);
                h.set_gid(1000);
            })
            .entry("link", EntryType::Symlink, "open", b"", |h| {
                h.set_uid(7);
                h.set_gid(8);
            });
        s.unpack(layer).unwrap();
        let d = s.dest();
        let mode = |p: &str| lstat(d.join(p)).mode() & 0o7777;
        assert_eq!(mode("suid"), 0o4755);
        assert_eq!(mode("sgid"), 0o2711);
        assert_eq!(mode("open"), 0o777);
        assert_eq!(mode("closed"), 0o000);
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("home/user"), 0o2750);
        let owner = |p: &str| {
            let m = lstat(d.join(p));
            (m.uid(), m.gid())
        };
        assert_eq!(owner("suid"), (1000, 2000));
        assert_eq!(owner("sgid"), (0, 50));
        assert_eq!(owner("home/user"), (1000, 1000));
        assert_eq!(owner("link"), (7, 8), "lchown, not the target");
        assert_eq!(owner("open"), (0, 0));
    }

    #[test]
    fn times_are_kept_and_directories_get_theirs_last() {
        let s = Scratch::new();
        let layer = Layer::new()
            .entry("dir/", EntryType::Directory, "", b"", |h| h.set_mtime(111))
            .entry("dir/sub/", EntryType::Directory, "", b"", |h| {
                h.set_mtime(222)
            })
            .entry("dir/sub/f", EntryType::Regular, "", b"f", |h| {
                h.set_mtime(333)
            })
            .entry("dir/l", EntryType::Symlink, "sub", b"", |h| {
                h.set_mtime(444)
            })
            .file("dir/.wh.gone", b"")
            .file("dir/later", b"added after the directory entry")
            .pax("mtime", b"1234567890.123456789")
            .pax("atime", b"1234567000.5")
            .file("precise", b"p")
            .pax("mtime", b"-1.25")
            .file("old", b"o");
        s.unpack(layer).unwrap();
        let d = s.dest();
        assert_eq!(lstat(d.join("dir")).mtime(), 111);
        assert_eq!(lstat(d.join("dir/sub")).mtime(), 222);
        assert_eq!(lstat(d.join("dir/sub/f")).mtime(), 333);
        assert_eq!(
            lstat(d.join("dir/l")).mtime(),
            444,
            "the symlink's own time"
        );
        assert_eq!(lstat(d.join("dir/later")).mtime(), MTIME as i64);
        let p = lstat(d.join("precise"));
        assert_eq!((p.mtime(), p.mtime_nsec()), (1234567890, 123456789));
        assert_eq!((p.atime(), p.atime_nsec()), (1234567000, 500_000_000));
        let o = lstat(d.join("old"));
        assert_eq!((o.mtime(), o.mtime_nsec()), (-2, 750_000_000));
    }

    #[test]
    fn pax_times_parse() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec(), t.tv_nsec()));
        assert_eq!(t("0"), Some((0, 0)));
        assert_eq!(t("12.5"), Some((12, 500_000_000)));
        assert_eq!(t("12."), Some((12, 0)));
        assert_eq!(
            t("12.0000000019"),
            Some((12, 1)),
            "beyond nanoseconds is dropped"
        );
        assert_eq!(t("-3"), Some((-3, 0)));
        assert_eq!(t("-3.5"), Some((-4, 500_000_000)));
        for bad in ["", "-", ".5", "1.x", "x", "1e9", "+1"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hardlinks_share_the_inode() {
        let s = Scratch::new();
        let layer = Layer::new()
            .file("bin/busybox", b"binary")
            .hardlink("bin/ls", "bin/busybox")
            .hardlink("./usr/bin/env", "./bin/busybox")
            .symlink("sym", "/etc/passwd")
            .hardlink("sym-link", "sym")
            .hardlink("bin/busybox", "bin/busybox");
        s.unpack(layer).unwrap();
        let d = s.dest();
        let ino = lstat(d.join("bin/busybox")).ino();
        assert_eq!(lstat(d.join("bin/ls")).ino(), ino);
        assert_eq!(lstat(d.join("usr/bin/env")).ino(), ino);
        assert_eq!(lstat(d.join("bin/busybox")).nlink(), 3);
        assert_eq!(fs::read(d.join("usr/bin/env")).unwrap(), b"binary");
        // A hardlink to a symlink is the symlink itself, not its target.
        let l = lstat(d.join("sym-link"));
        assert!(l.file_type().is_symlink());
        assert_eq!(l.ino(), lstat(d.join("sym")).ino());
    }

    #[test]
    fn whiteouts_and_opaque_markers_become_overlayfs_form() {
        let s = Scratch::new();
        let layer = Layer::new()
            .dir("data/", 0o755)
            .file("data/.wh.gone", b"")
            .file("missing/parent/.wh.x", b"")
            .file("opq/.wh..wh..opq", b"")
            .file("opq/new", b"n")
            .file("dir/.wh..wh..opq", b"")
            .dir("dir/", 0o700)
            .file(".wh..wh..opq", b"");
        s.unpack(layer).unwrap();
        let d = s.dest();
        for w in ["data/gone", "missing/parent/x"] {
            let m = lstat(d.join(w));
            assert!(m.file_type().is_char_device(), "{w}");
            assert_eq!((major(m.rdev()), minor(m.rdev())), (0, 0), "{w}");
        }
        assert!(!d.join("data/.wh.gone").exists());
        let opaque = |p: &Path| xattr::get(p, OPAQUE_XATTR).unwrap();
        assert_eq!(opaque(&d.join("opq")), Some(b"y".to_vec()));
        assert_eq!(
            opaque(&d.join("dir")),
            Some(b"y".to_vec()),
            "kept by a later dir entry"
        );
        assert_eq!(opaque(&d), Some(b"y".to_vec()), "the layer root");
        assert_eq!(opaque(&d.join("data")), None);
        assert!(!d.join("opq/.wh..wh..opq").exists());
        assert_eq!(fs::read(d.join("opq/new")).unwrap(), b"n");
        assert_eq!(lstat(d.join("dir")).mode() & 0o7777, 0o700);
    }

    #[test]
    fn whiteouts_only_hide_lower_layers() {
        let s = Scratch::new();
        let layer = Layer::new()
            // This layer's own file survives its whiteout.
            .file("a/kept", b"k")
            .file("a/.wh.kept", b"")
            // A whiteout then a new directory: the directory hides the
            // lower one (opaque), both spelled out and implied.
            .file(".wh.dir", b"")
            .dir("dir/", 0o755)
            .file("dir/f", b"f")
            .file("b/.wh.implied", b"")
            .file("b/implied/f", b"f")
            // A whiteout then a file: just the file.
            .file(".wh.file", b"")
            .file("file", b"new")
            // aufs bookkeeping is skipped.
            .file(".wh..wh.aufs", b"")
            .dir(".wh..wh.plnk/", 0o700)
            .file(".wh..wh.plnk/123.456", b"x")
            .file("c/.wh..wh.orph", b"");
        s.unpack(layer).unwrap();
        let d = s.dest();
        assert_eq!(fs::read(d.join("a/kept")).unwrap(), b"k");
        for dir in ["dir", "b/implied"] {
            assert!(lstat(d.join(dir)).is_dir(), "{dir}");
            assert_eq!(
                xattr::get(d.join(dir), OPAQUE_XATTR).unwrap(),
                Some(b"y".to_vec()),
                "{dir}"
            );
            assert_eq!(fs::read(d.join(dir).join("f")).unwrap(), b"f");
        }
        assert_eq!(fs::read(d.join("file")).unwrap(), b"new");
        assert!(!d.join(".wh..wh.aufs").exists());
        assert!(!d.join(".wh..wh.plnk").exists());
        assert!(!d.join("c/.wh..wh.orph").exists());
        assert!(!d.join("c/orph").exists());
    }

    #[test]
    fn device_nodes_and_fifos() {
        needs_root(); // mknod of devices needs CAP_MKNOD
        let s = Scratch::new();
        let layer = Layer::new()
            .entry("dev/null", EntryType::Char, "", b"", |h| {
                h.set_mode(0o666);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
            })
            .entry("dev/loop0", EntryType::Block, "", b"", |h| {
                h.set_mode(0o660);
                h.set_gid(6);
                h.set_device_major(7).unwrap();
                h.set_device_minor(0).unwrap();
            })
            .entry("run/fifo", EntryType::Fifo, "", b"", |h| h.set_mode(0o620));
        s.unpack(layer).unwrap();
        let d = s.dest();
        let null = lstat(d.join("dev/null"));
        assert!(null.file_type().is_char_device());
        assert_eq!((major(null.rdev()), minor(null.rdev())), (1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
        let lp = lstat(d.join("dev/loop0"));
        assert!(lp.file_type().is_block_device());
        assert_eq!((major(lp.rdev()), minor(lp.rdev()), lp.gid()), (7, 0, 6));
        let fifo = lstat(d.join("run/fifo"));
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o620);
        assert_eq!(fifo.mtime(), MTIME as i64);
    }

    #[test]
    fn pax_xattrs_are_applied_except_overlayfs_ones() {
        needs_root(); // trusted.* xattrs need CAP_SYS_ADMIN
        let s = Scratch::new();
        let layer = Layer::new()
            .pax("SCHILY.xattr.user.mime", b"text/plain")
            .pax("SCHILY.xattr.trusted.overlay.redirect", b"/etc")
            .pax("SCHILY.xattr.trusted.overlay.opaque", b"y")
            .file("f", b"x")
            .pax("SCHILY.xattr.user.dir", b"d")
            .dir("d/", 0o755)
            .pax("SCHILY.xattr.user.link", b"refused by the kernel, ignored")
            .symlink("l", "f")
            .pax("SCHILY.xattr.trusted.berth", b"t")
            .file("t", b"t");
        s.unpack(layer).unwrap();
        let d = s.dest();
        assert_eq!(
            xattr::get(d.join("f"), "user.mime").unwrap(),
            Some(b"text/plain".to_vec())
        );
        assert_eq!(
            xattr::get(d.join("f"), "trusted.overlay.redirect").unwrap(),
            None
        );
        assert_eq!(xattr::get(d.join("f"), OPAQUE_XATTR).unwrap(), None);
        assert_eq!(
            xattr::get(d.join("d"), "user.dir").unwrap(),
            Some(b"d".to_vec())
        );
        assert_eq!(xattr::get(d.join("l"), "user.link").unwrap(), None);
        assert_eq!(
            xattr::get(d.join("t"), "trusted.berth").unwrap(),
            Some(b"t".to_vec())
        );
    }

    #[test]
    fn pax_owner_beyond_the_octal_field() {
        needs_root();
        let s = Scratch::new();
        let layer = Layer::new()
            .pax("uid", b"3000000")
            .pax("gid", b"4000000")
            .file("big-ids", b"x");
        s.unpack(layer).unwrap();
        let m = lstat(s.dest().join("big-ids"));
        assert_eq!((m.uid(), m.gid()), (3_000_000, 4_000_000));
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        needs_root(); // the replaced directory's owner
        let s = Scratch::new();
        let layer = Layer::new()
            .file("f", b"one")
            .file("f", b"two")
            .symlink("l", "f")
            .file("l", b"now a file")
            .file("x", b"file first")
            .dir("x/", 0o750)
            .dir("y/", 0o755)
            .file("y/child", b"c")
            .file("y", b"a file now")
            .entry("z/", EntryType::Directory, "", b"", |h| h.set_mtime(5))
            .file("z/keep", b"k")
            .entry("z/", EntryType::Directory, "", b"", |h| {
                h.set_mode(0o700);
                h.set_uid(5);
                h.set_mtime(6);
            })
            .dir("w/", 0o755)
            .symlink("w", "/somewhere")
            .file("h-src", b"h")
            .file("h", b"old")
            .hardlink("h", "h-src")
            .entry("again/", EntryType::Directory, "", b"", |h| h.set_mtime(7))
            .file("again", b"f")
            .entry("again/", EntryType::Directory, "", b"", |h| h.set_mtime(8));
        s.unpack(layer).unwrap();
        let d = s.dest();
        assert_eq!(fs::read(d.join("f")).unwrap(), b"two");
        assert_eq!(fs::read(d.join("l")).unwrap(), b"now a file");
        assert!(lstat(d.join("x")).is_dir());
        assert_eq!(lstat(d.join("x")).mode() & 0o7777, 0o750);
        assert_eq!(fs::read(d.join("y")).unwrap(), b"a file now");
        let z = lstat(d.join("z"));
        assert_eq!((z.mode() & 0o7777, z.mtime()), (0o700, 6));
        assert_eq!(z.uid(), 5);
        assert_eq!(
            fs::read(d.join("z/keep")).unwrap(),
            b"k",
            "updating a directory keeps it"
        );
        assert_eq!(fs::read_link(d.join("w")).unwrap(), Path::new("/somewhere"));
        assert_eq!(lstat(d.join("h")).ino(), lstat(d.join("h-src")).ino());
        assert_eq!(lstat(d.join("again")).mtime(), 8);
    }

    #[test]
    fn the_layer_root_entry_is_ignored() {
        let s = Scratch::new();
        fs::set_permissions(s.dest(), fs::Permissions::from_mode(0o755)).unwrap();
        let layer = Layer::new()
            .dir("./", 0o700)
            .dir(".", 0o700)
            .dir("/", 0o700)
            .file("f", b"f");
        // "/" is absolute: refused even though it names the root.
        let e = s.unpack(layer).unwrap_err();
        assert!(e.message.contains("escapes the snapshot"), "{e}");

        let s = Scratch::new();
        fs::set_permissions(s.dest(), fs::Permissions::from_mode(0o755)).unwrap();
        s.unpack(
            Layer::new()
                .dir("./", 0o700)
                .dir(".", 0o700)
                .file("./f", b"f"),
        )
        .unwrap();
        assert_eq!(lstat(s.dest()).mode() & 0o7777, 0o755);
        assert!(s.dest().join("f").exists());
    }

    #[test]
    fn long_names_gnu_and_pax() {
        let long_dir = "d".repeat(150);
        let long = format!("{long_dir}/{}", "f".repeat(120));
        let long_target = format!("/{}", "t".repeat(200));
        // GNU long names and long link names, as the tar Builder writes them.
        let mut b = Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, &long, &b"z"[..]).unwrap();
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("{long_dir}/link"), &long_target)
            .unwrap();
        let s = Scratch::new();
        unpack_layer(&b.into_inner().unwrap()[..], &s.dest()).unwrap();
        assert_eq!(fs::read(s.dest().join(&long)).unwrap(), b"z");
        assert_eq!(
            fs::read_link(s.dest().join(&long_dir).join("link")).unwrap(),
            Path::new(&long_target)
        );

        // PAX path and linkpath.
        let s = Scratch::new();
        let pax_name = format!("p/{}", "x".repeat(200));
        s.unpack(
            Layer::new()
                .file(&pax_name, b"pax")
                .hardlink(&format!("p/{}", "y".repeat(150)), &pax_name),
        )
        .unwrap();
        assert_eq!(fs::read(s.dest().join(&pax_name)).unwrap(), b"pax");
        assert_eq!(
            fs::read(s.dest().join(format!("p/{}", "y".repeat(150)))).unwrap(),
            b"pax"
        );
    }

    #[test]
    fn large_files_stream_intact() {
        let data: Vec<u8> = (0..(9 << 20) + 12345u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let s = Scratch::new();
        let stats = s.unpack(Layer::new().file("big", &data)).unwrap();
        assert_eq!(fs::read(s.dest().join("big")).unwrap(), data);
        assert!(stats.bytes >= data.len() as u64, "{stats:?}");
        assert_eq!(stats.inodes, 1);
    }

    #[test]
    fn stats_count_allocated_bytes_and_inodes_once() {
        let s = Scratch::new();
        let layer = Layer::new()
            .dir("d/", 0o755)
            .file("d/f", &[7u8; 10_000])
            .hardlink("d/h", "d/f")
            .symlink("d/s", "f")
            .file("d/.wh.w", b"")
            .file("e/g", b"g");
        let stats = s.unpack(layer).unwrap();
        let d = s.dest();
        let paths = ["d", "d/f", "d/s", "d/w", "e", "e/g"];
        let expected: u64 = paths.iter().map(|p| lstat(d.join(p)).blocks() * 512).sum();
        assert_eq!(
            stats,
            UnpackStats {
                bytes: expected,
                inodes: paths.len() as u64
            }
        );
        assert!(stats.bytes >= 10_000);
        assert_eq!(
            unpack_layer(&Layer::new().bytes()[..], &Scratch::new().dest()).unwrap(),
            UnpackStats::default()
        );
    }

    #[test]
    fn dot_dot_and_absolute_paths_are_refused() {
        let e = refused(|_| Layer::new().file("../escaped", b"x"), "../escaped");
        assert_eq!(
            e,
            "layer entry \"../escaped\" escapes the snapshot: it contains \"..\""
        );
        refused(
            |_| Layer::new().file("../../etc/passwd", b"x"),
            "../../etc/passwd",
        );
        refused(
            |_| Layer::new().file("a/../../escaped", b"x"),
            "a/../../escaped",
        );
        refused(|_| Layer::new().file("./../escaped", b"x"), "./../escaped");
        refused(|_| Layer::new().file("a/b/../c", b"x"), "a/b/../c");
        refused(|_| Layer::new().dir("../victim/", 0o777), "../victim/");
        refused(|_| Layer::new().symlink("../link", "/"), "../link");
        refused(|_| Layer::new().file("../.wh.victim", b""), "../.wh.victim");
        refused(
            |_| Layer::new().file("../victim/.wh..wh..opq", b""),
            "../victim/.wh..wh..opq",
        );
        refused(|_| Layer::new().file("a/.wh...", b""), "a/.wh...");
        let e = refused(
            |_| Layer::new().file("/berth-unpack-test-escaped", b"x"),
            "/berth-unpack-test-escaped",
        );
        assert_eq!(
            e,
            "layer entry \"/berth-unpack-test-escaped\" escapes the snapshot: it is an absolute path"
        );
        assert!(!Path::new("/berth-unpack-test-escaped").exists());
        // Refused even after good entries, which is why the caller deletes
        // the whole snapshot.
        refused(|_| Layer::new().file("ok", b"ok").file("..", b"x"), "..");
        // Long names go through the same check.
        let long = format!("{}/../../../escaped", "a/".repeat(60));
        refused(|_| Layer::new().file(&long, b"x"), &long);
    }

    #[test]
    fn symlinked_parents_are_refused() {
        let victim = |s: &Scratch| s.victim().to_str().unwrap().to_string();
        let e = refused(
            |s| {
                Layer::new()
                    .symlink("link", &victim(s))
                    .file("link/passwd", b"owned")
            },
            "link/passwd",
        );
        assert_eq!(
            e,
            "layer entry \"link/passwd\" escapes the snapshot: its parent \"link\" is a symlink"
        );
        refused(
            |_| Layer::new().symlink("up", "..").file("up/escaped", b"x"),
            "up/escaped",
        );
        refused(
            |_| Layer::new().symlink("up", "..").dir("up/victim/", 0o777),
            "up/victim/",
        );
        refused(
            |_| {
                Layer::new()
                    .symlink("etc", "/etc")
                    .file("./etc/passwd", b"x")
            },
            "./etc/passwd",
        );
        refused(
            |s| {
                Layer::new()
                    .dir("a/", 0o755)
                    .symlink("a/b", &victim(s))
                    .file("a/b/c/d", b"x")
            },
            "a/b/c/d",
        );
        refused(
            |s| {
                Layer::new()
                    .symlink("link", &victim(s))
                    .dir("link/sub/", 0o777)
            },
            "link/sub/",
        );
        refused(
            |s| {
                Layer::new()
                    .symlink("link", &victim(s))
                    .symlink("link/evil", "/")
            },
            "link/evil",
        );
        refused(
            |s| {
                Layer::new()
                    .file("f", b"f")
                    .symlink("link", &victim(s))
                    .hardlink("link/h", "f")
            },
            "link/h",
        );
        refused(
            |s| {
                Layer::new()
                    .symlink("link", &victim(s))
                    .file("link/.wh.passwd", b"")
            },
            "link/.wh.passwd",
        );
        refused(
            |s| {
                Layer::new()
                    .symlink("link", &victim(s))
                    .file("link/.wh..wh..opq", b"")
            },
            "link/.wh..wh..opq",
        );
        refused(
            |s| {
                Layer::new().symlink("link", &victim(s)).entry(
                    "link/null",
                    EntryType::Fifo,
                    "",
                    b"",
                    |_| {},
                )
            },
            "link/null",
        );
        // A directory replaced by a symlink is no longer a way in.
        refused(
            |s| {
                Layer::new()
                    .dir("d/", 0o755)
                    .file("d/f", b"f")
                    .symlink("d", &victim(s))
                    .file("d/passwd", b"owned")
            },
            "d/passwd",
        );
        // A symlink that merely points up through the layer is still refused
        // as a parent: nothing is ever opened through a symlink.
        refused(
            |_| {
                Layer::new()
                    .dir("real/", 0o755)
                    .symlink("alias", "real")
                    .file("alias/f", b"x")
            },
            "alias/f",
        );
    }

    #[test]
    fn hardlinks_out_of_the_layer_are_refused() {
        let victim = |s: &Scratch| s.victim().join("passwd").to_str().unwrap().to_string();
        let e = refused(|_| Layer::new().hardlink("h", "/etc/passwd"), "h");
        assert_eq!(
            e,
            "layer entry \"h\" escapes the snapshot: hardlink target \"/etc/passwd\" is an absolute path"
        );
        refused(|s| Layer::new().hardlink("h", &victim(s)), "h");
        refused(|_| Layer::new().hardlink("h", "../victim/passwd"), "h");
        refused(
            |_| {
                Layer::new()
                    .dir("a/", 0o755)
                    .hardlink("h", "a/../../victim/passwd")
            },
            "h",
        );
        let e = refused(|_| Layer::new().hardlink("h", "missing"), "h");
        assert!(e.contains("not in this layer"), "{e}");
        refused(|_| Layer::new().hardlink("h", "no/such/dir/file"), "h");
        let e = refused(
            |s| {
                Layer::new()
                    .symlink("d", s.victim().to_str().unwrap())
                    .hardlink("h", "d/passwd")
            },
            "h",
        );
        assert!(
            e.contains("escapes the snapshot") && e.contains("symlink \"d\""),
            "{e}"
        );
        refused(
            |_| {
                Layer::new()
                    .symlink("up", "..")
                    .hardlink("h", "up/victim/passwd")
            },
            "h",
        );
        refused(
            |_| Layer::new().dir("dir/", 0o755).hardlink("h", "dir"),
            "h",
        );
        refused(|_| Layer::new().hardlink("h", "."), "h");
        refused(|_| Layer::new().hardlink("h", ""), "h");
        refused(
            |_| {
                Layer::new()
                    .dir("d/", 0o755)
                    .file("d/f", b"f")
                    .hardlink("d", "d/f")
            },
            "d",
        );
        // The long-name form too.
        let far = format!("{}../../victim/passwd", "x/".repeat(60));
        refused(|_| Layer::new().hardlink("h", &far), "h");
    }

    #[test]
    fn replacing_a_symlink_never_writes_through_it() {
        let s = Scratch::new();
        let before = s.outside();
        let passwd = s.victim().join("passwd");
        let victim = s.victim();
        let layer = Layer::new()
            .symlink("file", passwd.to_str().unwrap())
            .file("file", b"owned")
            .symlink("dir", victim.to_str().unwrap())
            .dir("dir/", 0o777)
            .symlink("dev", passwd.to_str().unwrap())
            .entry("dev", EntryType::Fifo, "", b"", |_| {})
            .symlink("wh", passwd.to_str().unwrap())
            .file(".wh.wh", b"")
            .symlink("hl", passwd.to_str().unwrap())
            .hardlink("hl2", "hl")
            .symlink("sym", victim.to_str().unwrap())
            .symlink("sym", "/elsewhere")
            .file("src", b"src")
            .symlink("hard", passwd.to_str().unwrap())
            .hardlink("hard", "src");
        s.unpack(layer).unwrap();
        assert_eq!(s.outside(), before, "nothing outside dest changed");
        let d = s.dest();
        assert_eq!(fs::read(d.join("file")).unwrap(), b"owned");
        assert!(lstat(d.join("dir")).is_dir());
        assert_eq!(lstat(d.join("dir")).mode() & 0o7777, 0o777);
        assert!(lstat(d.join("dev")).file_type().is_fifo());
        assert!(
            lstat(d.join("wh")).file_type().is_symlink(),
            "same-layer entry kept"
        );
        assert!(lstat(d.join("hl2")).file_type().is_symlink());
        assert_eq!(
            fs::read_link(d.join("sym")).unwrap(),
            Path::new("/elsewhere")
        );
        assert_eq!(fs::read(d.join("hard")).unwrap(), b"src");
    }

    #[test]
    fn parents_that_are_files_are_refused() {
        let e = refused(|_| Layer::new().file("f", b"f").file("f/x", b"x"), "f/x");
        assert!(e.contains("not a directory"), "{e}");
    }

    #[test]
    fn malformed_tars_are_invalid_arguments() {
        let s = Scratch::new();
        let garbage = [0x41u8; 1024];
        let e = unpack_layer(&garbage[..], &s.dest()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert!(e.message.starts_with("read layer tar: "), "{e}");

        // A layer cut off in the middle of a file.
        let bytes = Layer::new().file("big", &[1u8; 4096]).bytes();
        let e = unpack_layer(&bytes[..512 + 1000], &Scratch::new().dest()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert!(e.message.starts_with("layer entry \"big\""), "{e}");

        // Entry types that have no place in a layer.
        let s = Scratch::new();
        let e = s
            .unpack(Layer::new().entry("vol", EntryType::new(b'V'), "", b"", |_| {}))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert_eq!(
            e.message,
            "layer entry \"vol\": unsupported tar entry type 'V'"
        );

        let e = Scratch::new()
            .unpack(Layer::new().symlink("dangling", ""))
            .unwrap_err();
        assert!(e.message.contains("without a target"), "{e}");

        let e = Scratch::new()
            .unpack(Layer::new().pax("mtime", b"soon").file("f", b""))
            .unwrap_err();
        assert_eq!(e.message, "layer entry \"f\": bad PAX mtime");

        // NUL bytes inside long names cannot reach the file system.
        for layer in [
            Layer::new().pax("path", b"a\0b").file("ignored", b""),
            Layer::new()
                .pax("linkpath", b"t\0x")
                .symlink("s", "ignored"),
            Layer::new()
                .file("t", b"")
                .pax("linkpath", b"t\0x")
                .hardlink("h", "ignored"),
        ] {
            let e = Scratch::new().unpack(layer).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
            assert!(e.message.contains("NUL byte"), "{e}");
        }

        let e = Scratch::new()
            .unpack(Layer::new().pax("GNU.sparse.major", b"1").file("s", b""))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert!(e.message.contains("sparse"), "{e}");
    }

    #[test]
    fn global_pax_headers_are_skipped() {
        let s = Scratch::new();
        let mut layer = Layer::new();
        let records = pax_record(b"comment", b"made by a test");
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..14].copy_from_slice(b"pax_global_hdr");
        h.set_entry_type(EntryType::XGlobalHeader);
        h.set_size(records.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        layer.b.append(&h, &records[..]).unwrap();
        s.unpack(layer.file("f", b"f")).unwrap();
        let names: Vec<_> = fs::read_dir(s.dest())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsStr::new("f")]);
    }

    /// Reads through, counting what was asked of the source.
    struct Counting<'a> {
        data: &'a [u8],
        read: usize,
    }

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = (&self.data[self.read..]).read(buf)?;
            self.read += n;
            Ok(n)
        }
    }

    #[test]
    fn oversized_tar_metadata_is_refused_before_it_is_buffered() {
        let mut gnu = Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        gnu.append_data(&mut h, "d/".repeat(600 << 10), &b""[..])
            .unwrap();
        for (what, bytes) in [
            (
                "a PAX header of",
                Layer::new()
                    .file("first", b"ok")
                    .pax("comment", &vec![b'c'; 2 << 20])
                    .file("f", b"x")
                    .bytes(),
            ),
            ("a GNU long name or link of", gnu.into_inner().unwrap()),
        ] {
            let s = Scratch::new();
            let mut source = Counting {
                data: &bytes,
                read: 0,
            };
            let e = unpack_layer(&mut source, &s.dest()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
            assert!(
                e.message.contains(what) && e.message.contains("at most 1 MiB"),
                "{e}"
            );
            assert!(source.read < 64 << 10, "{what}: read {} bytes", source.read);
        }

        // Within the limit, long metadata is fine.
        let s = Scratch::new();
        s.unpack(
            Layer::new()
                .pax("comment", &vec![b'c'; 900 << 10])
                .file("f", b"x"),
        )
        .unwrap();
        assert_eq!(fs::read(s.dest().join("f")).unwrap(), b"x");
    }

    #[test]
    fn long_entry_names_are_cut_short_in_errors() {
        let name = format!("{}/../escaped", "n".repeat(200_000));
        let e = Scratch::new()
            .unpack(Layer::new().file(&name, b"x"))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.len() < 512, "{}", e.message.len());
        assert!(
            e.message.contains("escapes the snapshot"),
            "{}",
            &e.message[..200]
        );
    }

    #[test]
    fn file_contents_that_look_like_headers_are_data() {
        // A header block announcing a 100 MiB PAX header, as file data.
        let mut fake = Header::new_ustar();
        fake.set_entry_type(EntryType::XHeader);
        fake.set_size(100 << 20);
        fake.set_cksum();
        let mut data = fake.as_bytes().to_vec();
        data.extend_from_slice(&[0u8; 512]);
        data.extend_from_slice(fake.as_bytes());
        let s = Scratch::new();
        s.unpack(
            Layer::new()
                .file("plain", &data)
                // The header says 0 bytes, the PAX size 1536: the data is
                // what the PAX size says.
                .pax("size", b"1536")
                .file_with("sized", &data, |h| h.set_size(0))
                .file("after", b"after"),
        )
        .unwrap();
        assert_eq!(fs::read(s.dest().join("plain")).unwrap(), data);
        assert_eq!(fs::read(s.dest().join("sized")).unwrap(), data);
        assert_eq!(fs::read(s.dest().join("after")).unwrap(), b"after");
    }

    #[test]
    fn non_utf8_names_work_and_are_shown_lossily() {
        let s = Scratch::new();
        let mut layer = Layer::new();
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..4].copy_from_slice(b"f\xff\xfe1");
        h.set_entry_type(EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        layer.b.append(&h, &b"x"[..]).unwrap();
        s.unpack(layer).unwrap();
        assert_eq!(
            fs::read(s.dest().join(OsStr::from_bytes(b"f\xff\xfe1"))).unwrap(),
            b"x"
        );

        assert_eq!(
            escapes(b"../\xff", "x").message,
            "layer entry \"../\u{fffd}\" escapes the snapshot: x"
        );
    }
}
