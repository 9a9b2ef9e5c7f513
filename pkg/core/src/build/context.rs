//! The build context: the client's tar (plain, gzip, bzip2 or xz),
//! unpacked into a private temp dir under the root, every entry checked
//! to stay inside it; the Dockerfile read and parsed; what
//! `.dockerignore` excludes removed, so no step sees it. The dir goes
//! when the context is dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use berth_dockerfile::{Dockerfile, Ignore};
use berth_errdefs::{Error, Result};

pub(crate) struct Context {
    /// The unpacked context (the temp dir's `root`).
    pub root: PathBuf,
    /// The temp dir, removed on drop.
    dir: PathBuf,
    pub dockerfile: Dockerfile,
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), "remove a build context: {e}");
        }
    }
}

impl Context {
    /// Unpacks `input` under a new dir in `parent` and reads the
    /// Dockerfile at `dockerfile` in it. Blocking. On any error nothing
    /// is left.
    pub fn unpack(parent: &Path, input: impl Read, dockerfile: &str) -> Result<Context> {
        let dir = parent.join(crate::new_id());
        let root = dir.join("root");
        std::fs::create_dir_all(&root)?;
        // Made before anything can fail: its drop removes the dir.
        let mut ctx = Context {
            root,
            dir,
            dockerfile: Dockerfile {
                escape: '\\',
                syntax: None,
                meta_args: Vec::new(),
                stages: Vec::new(),
                notes: Vec::new(),
            },
        };
        unpack_tar(decompress(input)?, &ctx.root)?;
        let rel = inside(dockerfile).ok_or_else(|| {
            Error::invalid(format!(
                "the Dockerfile path {dockerfile:?} is outside the build context"
            ))
        })?;
        let text = std::fs::read_to_string(ctx.root.join(&rel)).map_err(|e| {
            Error::invalid(format!(
                "Cannot locate specified Dockerfile: {dockerfile} ({e})"
            ))
        })?;
        ctx.dockerfile = berth_dockerfile::parse(&text)?;
        let ignore = match std::fs::read_to_string(ctx.root.join(".dockerignore")) {
            Ok(text) => Ignore::parse(&text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::parse("")?,
            Err(e) => return Err(Error::from(e).context("read .dockerignore")),
        };
        if !ignore.is_empty() {
            remove_excluded(&ctx.root, "", &ignore)?;
        }
        Ok(ctx)
    }
}

/// `rel` cleaned, when it stays inside the root (no `..` above it, not
/// absolute); `None` otherwise.
pub(crate) fn inside(rel: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The stream, decompressed as its first bytes say: gzip in process,
/// bzip2 and xz through the host's `bzip2`/`xz`, anything else as is.
pub(crate) fn decompress<'a>(input: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let head = input.fill_buf()?.to_vec();
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(input)));
    }
    let tool = if head.starts_with(b"BZh") {
        "bzip2"
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "xz"
    } else {
        return Ok(Box::new(input));
    };
    // The tool reads a spooled copy: a pipe would need a feeding thread
    // that outlives a borrowed input.
    let mut spool = tempfile_in_tmp()?;
    std::io::copy(&mut input, &mut spool.0)?;
    use std::io::Seek;
    spool.0.rewind()?;
    let child = std::process::Command::new(tool)
        .arg("-dc")
        .stdin(spool.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| Error::invalid(format!("a {tool} context needs the host's {tool}: {e}")))?;
    Ok(Box::new(ToolOutput { child }))
}

/// An unlinked temp file (gone when closed).
fn tempfile_in_tmp() -> Result<(std::fs::File,)> {
    let path = std::env::temp_dir().join(format!("berth-build-{}", crate::new_id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok((file,))
}

/// A decompressor's output; a failed run is an error at the end.
struct ToolOutput {
    child: std::process::Child,
}

impl Read for ToolOutput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match self.child.stdout.as_mut() {
            Some(out) => out.read(buf)?,
            None => 0,
        };
        if n == 0 {
            self.child.stdout = None;
            let status = self.child.wait()?;
            if !status.success() {
                return Err(std::io::Error::other(format!(
                    "decompressing the context failed ({status})"
                )));
            }
        }
        Ok(n)
    }
}

impl Drop for ToolOutput {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unpacks a tar under `root`: an entry naming a path outside it is
/// `InvalidArgument` naming the entry; links must stay inside too.
pub(crate) fn unpack_tar(input: impl Read, root: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(true);
    let entries = archive
        .entries()
        .map_err(|e| Error::invalid(format!("the build context is not a tar: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| Error::invalid(format!("malformed build context tar: {e}")))?;
        let path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&path).to_string();
        let refused = || {
            Error::invalid(format!(
                "the build context entry {name:?} leaves the context: refused"
            ))
        };
        if inside(&name).is_none() || name.starts_with('/') {
            return Err(refused());
        }
        if let Ok(Some(link)) = entry.link_name() {
            let hard = entry.header().entry_type().is_hard_link();
            let link = link.to_string_lossy().to_string();
            let base = Path::new(&name).parent().unwrap_or(Path::new(""));
            let target = if hard {
                link.clone()
            } else {
                base.join(&link).display().to_string()
            };
            if (hard || !link.starts_with('/')) && inside(&target).is_none() {
                return Err(refused());
            }
        }
        let unpacked = entry
            .unpack_in(root)
            .map_err(|e| Error::invalid(format!("unpack the build context entry {name:?}: {e}")))?;
        if !unpacked {
            return Err(refused());
        }
    }
    Ok(())
}

/// Removes what `.dockerignore` excludes under `root/rel`. The Dockerfile
/// and `.dockerignore` go too when excluded (they were read already).
fn remove_excluded(root: &Path, rel: &str, ignore: &Ignore) -> Result<()> {
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let is_dir = entry.file_type()?.is_dir();
        if ignore.is_excluded(&path) {
            if is_dir && ignore.may_have_exceptions_under(&path) {
                remove_excluded(root, &path, ignore)?;
            } else if is_dir {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        } else if is_dir {
            remove_excluded(root, &path, ignore)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`: write the name bytes directly.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_traversing_entry_is_refused_by_name_and_nothing_is_left() {
        let parent = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("Dockerfile", b"FROM scratch\n"), ("../evil", b"x")]);
        let err = Context::unpack(parent.path(), &tar[..], "Dockerfile")
            .err()
            .expect("refused");
        assert_eq!(err.kind, berth_errdefs::ErrorKind::InvalidArgument);
        assert!(err.message.contains("\"../evil\""), "{err}");
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
        assert!(!parent.path().parent().unwrap().join("evil").exists());
    }

    #[test]
    fn ignored_files_are_gone_and_exceptions_stay() {
        let parent = tempfile::tempdir().unwrap();
        let tar = tar_of(&[
            ("Dockerfile", b"FROM scratch\n"),
            (".dockerignore", b"logs\n*.tmp\n!keep.tmp\n"),
            ("logs/a", b"x"),
            ("a.tmp", b"x"),
            ("keep.tmp", b"x"),
            ("src/main", b"x"),
        ]);
        let ctx = Context::unpack(parent.path(), &tar[..], "Dockerfile").unwrap();
        assert!(!ctx.root.join("logs").exists());
        assert!(!ctx.root.join("a.tmp").exists());
        assert!(ctx.root.join("keep.tmp").exists());
        assert!(ctx.root.join("src/main").exists());
        assert_eq!(ctx.dockerfile.stages.len(), 1);
        drop(ctx);
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn gzip_is_told_by_its_magic() {
        use std::io::Write;
        let tar = tar_of(&[("Dockerfile", b"FROM scratch\n")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let parent = tempfile::tempdir().unwrap();
        let ctx = Context::unpack(parent.path(), &gz[..], "Dockerfile").unwrap();
        assert!(ctx.root.join("Dockerfile").exists());
    }
}
