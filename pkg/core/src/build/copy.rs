//! COPY and ADD: their sources (context paths and globs, an earlier
//! stage's or an image's files, heredocs) written as a layer tar at the
//! destination, with `--chown`/`--chmod` applied; ADD unpacks local tar
//! archives and refuses URLs. A context source's content, paths, modes
//! and ownership are summed into the step's cache key.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_dockerfile::{glob_match, has_glob_chars, Copy};
use berth_errdefs::{Error, Result};
use berth_image::service::Image as LeafImage;
use sha2::{Digest, Sha256};

use super::context::{decompress, inside};
use super::steps::{absolute, hex, Vars};
use super::view::View;
use super::{Builder, Stage};

/// Where the sources are read from.
enum From {
    Context,
    Image(LeafImage),
}

pub(crate) struct CopyPlan {
    from: From,
    /// Source words after substitution (paths or globs).
    sources: Vec<String>,
    /// Inline files: name and content.
    inline: Vec<(String, String)>,
    /// Absolute destination as written (a trailing `/` kept).
    dest: String,
    chown: Option<String>,
    chmod: Option<u32>,
    add: bool,
    /// Context sources: a digest of what they hold.
    checksum: String,
    /// The context's root.
    context: PathBuf,
    name: &'static str,
}

impl CopyPlan {
    pub async fn prepare(
        b: &Builder,
        vars: &Vars,
        copy: &Copy,
        add: bool,
        workdir: &str,
        built: &[LeafImage],
    ) -> Result<CopyPlan> {
        let name = if add { "ADD" } else { "COPY" };
        let mut sources = Vec::new();
        for s in &copy.sources {
            let s = vars.expand(s)?;
            if s.starts_with("http://") || s.starts_with("https://") {
                return Err(Error::invalid(format!(
                    "ADD of a URL ({s}) is not supported: berth builds offline; download it into the build context and COPY it"
                )));
            }
            sources.push(s);
        }
        let mut inline = Vec::new();
        for h in &copy.heredocs {
            let content = match h.expand {
                true => berth_dockerfile::expand_heredoc(&h.content, '\\', &|k| {
                    vars.expand(&format!("${{{k}}}")).ok()
                })?,
                false => h.content.clone(),
            };
            inline.push((h.name.clone(), content));
        }
        let raw_dest = vars.expand(&copy.dest)?;
        let mut dest = absolute(workdir, &raw_dest);
        if raw_dest.ends_with('/') && dest != "/" {
            dest.push('/');
        }
        let chmod = match &copy.chmod {
            Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
                Error::invalid(format!("invalid --chmod value {m:?}: an octal mode"))
            })?),
            None => None,
        };
        let chown = copy.chown.as_ref().map(|c| vars.expand(c)).transpose()?;
        let from = match &copy.from {
            None => From::Context,
            Some(f) => {
                let f = vars.expand(f)?;
                let df = &b.ctx.dockerfile;
                match b.stage_image(df, &f, built) {
                    Some(image) => From::Image(image),
                    None if df.stage_index(&f).is_some() => {
                        return Err(Error::invalid(format!(
                            "{name} --from={f}: that stage is not built before this one"
                        )))
                    }
                    None => From::Image(b.image(&f, false).await.map_err(|e| {
                        Error::new(
                            e.kind,
                            format!(
                                "{name} --from={f}: no build stage of that name, and no such image: {}",
                                e.message
                            ),
                        )
                    })?),
                }
            }
        };
        let context = b.ctx.root.clone();
        let mut plan = CopyPlan {
            from,
            sources,
            inline,
            dest,
            chown,
            chmod,
            add,
            checksum: String::new(),
            context,
            name,
        };
        if let From::Context = plan.from {
            let (root, words) = (plan.context.clone(), plan.sources.clone());
            let name = plan.name;
            plan.checksum = tokio::task::spawn_blocking(move || {
                let found = resolve_sources(&root, &words, name)?;
                checksum(&found)
            })
            .await
            .map_err(|e| Error::internal(format!("checksum task: {e}")))??;
        }
        Ok(plan)
    }

    /// What the history entry says after the instruction's name.
    pub fn describe(&self) -> String {
        let what = match &self.from {
            From::Context if self.checksum.is_empty() => "heredoc".to_string(),
            From::Context => format!("dir:{}", &self.checksum[..16.min(self.checksum.len())]),
            From::Image(i) => format!("from:{}", i.id),
        };
        format!("{what} in {}", self.dest)
    }

    /// What the cache key depends on.
    pub fn key_text(&self) -> String {
        let from = match &self.from {
            From::Context => "context".to_string(),
            From::Image(i) => i.id.clone(),
        };
        format!(
            "{}\n{from}\n{:?}\n{:?}\n{}\n{}\n{:?}\n{:?}\n{}",
            self.name,
            self.sources,
            self.inline,
            self.dest,
            self.add,
            self.chown,
            self.chmod,
            self.checksum
        )
    }

    /// Writes the layer tar; its path (under the build dir).
    pub async fn make_tar(self, b: &Builder, state: &Stage) -> Result<PathBuf> {
        let core = b.core.clone();
        let parent = state.image.clone();
        let out = core
            .shared
            .config
            .root
            .join("build")
            .join(format!("layer-{}.tar", crate::new_id()));
        let path = out.clone();
        let written = tokio::task::spawn_blocking(move || -> Result<()> {
            let target = View::open(&core, parent.as_ref())?;
            let source_view = match &self.from {
                From::Image(image) => Some(View::open(&core, Some(image))?),
                From::Context => None,
            };
            let root = match &source_view {
                Some(v) => v.root(),
                None => self.context.clone(),
            };
            let owner = match &self.chown {
                Some(c) => Some(resolve_owner(&target, c)?),
                None => None,
            };
            let found = resolve_sources(&root, &self.sources, self.name)?;
            let file = std::fs::File::create(&path)?;
            let mut w = Writer {
                tar: tar::Builder::new(std::io::BufWriter::new(file)),
                owner,
                chmod: self.chmod,
            };
            w.tar.follow_symlinks(false);
            let many = found.len() + self.inline.len() > 1;
            let into_dir = self.dest.ends_with('/') || many;
            let dest = self.dest.trim_end_matches('/').to_string();
            let dest = if dest.is_empty() {
                "/".to_string()
            } else {
                dest
            };
            // The destination directory, and whatever above it is missing.
            let dir_of_dest = match into_dir || found.iter().any(|s| s.1.is_dir()) {
                true => dest.clone(),
                false => parent_of(&dest),
            };
            w.missing_dirs(&target, &dir_of_dest)?;
            for (_, host) in &found {
                let meta = std::fs::symlink_metadata(host)?;
                if meta.is_dir() {
                    w.dir_contents(host, &dest)?;
                    continue;
                }
                let base = host.file_name().map(|n| n.to_string_lossy().to_string());
                let base = base.unwrap_or_default();
                let to = match into_dir || target.is_dir(&dest) {
                    true => join(&dest, &base),
                    false => dest.clone(),
                };
                if self.add && meta.is_file() && is_archive(host)? {
                    w.missing_dirs(&target, &dest)?;
                    w.archive(host, &dest)?;
                    continue;
                }
                w.entry(host, &to)?;
            }
            for (name, content) in &self.inline {
                let to = match into_dir {
                    true => join(&dest, name),
                    false => dest.clone(),
                };
                w.inline(&to, content.as_bytes())?;
            }
            w.tar
                .into_inner()?
                .into_inner()
                .map_err(|e| e.into_error())?;
            Ok(())
        })
        .await
        .map_err(|e| Error::internal(format!("copy task: {e}")));
        match written {
            Ok(Ok(())) => Ok(out),
            Ok(Err(e)) | Err(e) => {
                let _ = std::fs::remove_file(&out);
                Err(e)
            }
        }
    }
}

/// The sources `words` name under `root`: each word a path or a glob,
/// staying inside `root`. A missing one is an error naming it.
fn resolve_sources(root: &Path, words: &[String], name: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for word in words {
        let rel = inside(word.trim_start_matches('/')).ok_or_else(|| {
            Error::invalid(format!(
                "{name} failed: forbidden path outside the build context: {word} ()"
            ))
        })?;
        let rel = rel.display().to_string();
        if has_glob_chars(word) {
            let pattern = berth_dockerfile::clean_path(word.trim_start_matches('/'));
            let mut matched = Vec::new();
            walk(root, "", &mut |path| {
                if glob_match(&pattern, path).unwrap_or(false) {
                    matched.push((path.to_string(), root.join(path)));
                }
            })?;
            if matched.is_empty() {
                return Err(Error::invalid(format!(
                    "{name} failed: no source files were specified by {word:?}"
                )));
            }
            matched.sort();
            out.extend(matched);
            continue;
        }
        let host = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        // A symlinked parent must not lead out of the root.
        let parent = host.parent().unwrap_or(root);
        let inside_root = std::fs::canonicalize(parent)
            .map(|p| p.starts_with(std::fs::canonicalize(root).unwrap_or(root.to_path_buf())))
            .unwrap_or(false);
        if !inside_root && host != root {
            return Err(Error::invalid(format!(
                "{name} failed: forbidden path outside the build context: {word} ()"
            )));
        }
        if std::fs::symlink_metadata(&host).is_err() {
            return Err(Error::invalid(format!(
                "{name} failed: file not found in build context or excluded by .dockerignore: stat {word}: file does not exist"
            )));
        }
        out.push((rel, host));
    }
    Ok(out)
}

/// Every path under `root/rel` (relative, `/`-separated), sorted.
fn walk(root: &Path, rel: &str, f: &mut dyn FnMut(&str)) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(root.join(rel))?
        .filter_map(|e| e.ok())
        .collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name().to_string_lossy().to_string();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        f(&path);
        if e.file_type()?.is_dir() {
            walk(root, &path, f)?;
        }
    }
    Ok(())
}

/// A digest of the sources: each path, type, mode, owner, and content or
/// link target, in order.
fn checksum(found: &[(String, PathBuf)]) -> Result<String> {
    let mut h = Sha256::new();
    for (rel, host) in found {
        sum_one(&mut h, rel, host)?;
        if std::fs::symlink_metadata(host)?.is_dir() {
            let mut inner = Vec::new();
            walk(host, "", &mut |p| inner.push(p.to_string()))?;
            for p in inner {
                sum_one(&mut h, &format!("{rel}/{p}"), &host.join(&p))?;
            }
        }
    }
    Ok(hex(&h.finalize()))
}

fn sum_one(h: &mut Sha256, rel: &str, host: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(host)?;
    h.update(rel.as_bytes());
    h.update(format!("\0{:o}\0{}\0{}\0", meta.mode(), meta.uid(), meta.gid()).as_bytes());
    if meta.is_file() {
        let mut f = std::fs::File::open(host)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    } else if meta.file_type().is_symlink() {
        h.update(std::fs::read_link(host)?.as_os_str().as_encoded_bytes());
    }
    h.update([0xff]);
    Ok(())
}

/// `user[:group]` (names or ids) as the target image's ids.
fn resolve_owner(target: &View, chown: &str) -> Result<(u32, u32)> {
    let (user, group) = match chown.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (chown, None),
    };
    let uid_gid = berth_oci::passwd::resolve(
        &target.root(),
        &berth_oci::spec::UserRequest::default(),
        user,
    )?;
    let gid = match group {
        None => uid_gid.gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let text = berth_oci::passwd::read_in_root(&target.root(), "/etc/group")?
                    .unwrap_or_default();
                berth_oci::passwd::parse_group(&String::from_utf8_lossy(&text))
                    .into_iter()
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| {
                        Error::invalid(format!("--chown={chown}: no group {g} in the image"))
                    })?
            }
        },
    };
    Ok((uid_gid.uid, gid))
}

/// A tar (plain, gzip, bzip2 or xz) ADD unpacks rather than copies.
fn is_archive(path: &Path) -> Result<bool> {
    let mut head = [0u8; 512];
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        let m = f.read(&mut head[n..])?;
        if m == 0 {
            break;
        }
        n += m;
    }
    let head = &head[..n];
    Ok(head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || is_tar_header(head))
}

/// A first tar header (ustar or the older v7 format): a name, and a
/// checksum that adds up.
fn is_tar_header(head: &[u8]) -> bool {
    if head.len() < 512 || head[0] == 0 {
        return false;
    }
    let field = String::from_utf8_lossy(&head[148..156]);
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = head[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == stored
}

/// The directories a layer needs for `dir` (absolute) where the image
/// lacks them (mode 0755, root's): for WORKDIR.
pub(crate) fn dirs_tar(target: &View, dir: &str) -> Result<Vec<u8>> {
    let mut w = Writer {
        tar: tar::Builder::new(Vec::new()),
        owner: None,
        chmod: None,
    };
    w.missing_dirs(target, dir)?;
    Ok(w.tar.into_inner()?)
}

struct Writer<W: std::io::Write> {
    tar: tar::Builder<W>,
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
}

impl<W: std::io::Write> Writer<W> {
    fn header(&self, kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(mtime);
        let (uid, gid) = self.owner.unwrap_or((0, 0));
        h.set_uid(u64::from(uid));
        h.set_gid(u64::from(gid));
        h
    }

    /// Directory entries for `dir` and its parents that `target` lacks.
    fn missing_dirs(&mut self, target: &View, dir: &str) -> Result<()> {
        let mut path = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            path = format!("{path}/{part}");
            if !target.exists(&path) {
                let mut h = self.header(tar::EntryType::Directory, 0o755, 0, now());
                self.tar
                    .append_data(&mut h, format!("{}/", &path[1..]), std::io::empty())?;
            }
        }
        Ok(())
    }

    /// One file, symlink or directory (not its contents) at `to`.
    fn entry(&mut self, host: &Path, to: &str) -> Result<()> {
        let meta = std::fs::symlink_metadata(host)?;
        let mtime = meta.mtime().max(0) as u64;
        let name = to.trim_start_matches('/');
        let mode = self.chmod.unwrap_or(meta.permissions().mode() & 0o7777);
        if meta.file_type().is_symlink() {
            let mut h = self.header(tar::EntryType::Symlink, 0o777, 0, mtime);
            let link = std::fs::read_link(host)?;
            self.tar.append_link(&mut h, name, link)?;
        } else if meta.is_dir() {
            let mut h = self.header(tar::EntryType::Directory, mode, 0, mtime);
            self.tar
                .append_data(&mut h, format!("{name}/"), std::io::empty())?;
        } else if meta.is_file() {
            let mut h = self.header(tar::EntryType::Regular, mode, meta.len(), mtime);
            self.tar
                .append_data(&mut h, name, std::fs::File::open(host)?)?;
        }
        Ok(())
    }

    /// What the directory `host` holds, under `to`.
    fn dir_contents(&mut self, host: &Path, to: &str) -> Result<()> {
        let mut inner = Vec::new();
        walk(host, "", &mut |p| inner.push(p.to_string()))?;
        for p in inner {
            self.entry(&host.join(&p), &join(to, &p))?;
        }
        Ok(())
    }

    fn inline(&mut self, to: &str, content: &[u8]) -> Result<()> {
        let mode = self.chmod.unwrap_or(0o644);
        let mut h = self.header(tar::EntryType::Regular, mode, content.len() as u64, now());
        self.tar
            .append_data(&mut h, to.trim_start_matches('/'), content)?;
        Ok(())
    }

    /// ADD of a local archive: its entries under `to`, each kept inside.
    fn archive(&mut self, host: &Path, to: &str) -> Result<()> {
        let input = decompress(std::fs::File::open(host)?)?;
        let mut archive = tar::Archive::new(input);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).to_string();
            let rel = inside(name.trim_start_matches('/')).ok_or_else(|| {
                Error::invalid(format!(
                    "ADD {}: the archive entry {name:?} leaves its directory",
                    host.display()
                ))
            })?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            let path = join(to, &rel.display().to_string());
            let mut header = entry.header().clone();
            let link = entry.link_name()?.map(|l| l.into_owned());
            let path = path.trim_start_matches('/');
            match (header.entry_type(), link) {
                (tar::EntryType::Symlink, Some(l)) => self.tar.append_link(&mut header, path, l)?,
                (tar::EntryType::Link, Some(l)) => {
                    let l = inside(&l.display().to_string()).ok_or_else(|| {
                        Error::invalid(format!(
                            "ADD: the archive link {name:?} leaves its directory"
                        ))
                    })?;
                    let l = join(to, &l.display().to_string());
                    self.tar
                        .append_link(&mut header, path, l.trim_start_matches('/'))?
                }
                _ => self.tar.append_data(&mut header, path, &mut entry)?,
            }
        }
        Ok(())
    }
}

fn join(dir: &str, name: &str) -> String {
    format!(
        "{}/{}",
        dir.trim_end_matches('/'),
        name.trim_start_matches('/')
    )
}

fn parent_of(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/sub")).unwrap();
        std::fs::write(dir.path().join("src/a.rs"), "a").unwrap();
        std::fs::write(dir.path().join("src/sub/b.rs"), "b").unwrap();
        std::fs::write(dir.path().join("top.txt"), "t").unwrap();
        dir
    }

    #[test]
    fn sources_outside_the_context_or_missing_are_refused_by_name() {
        let dir = tree();
        let e = resolve_sources(dir.path(), &["../outside".into()], "COPY").unwrap_err();
        assert!(
            e.message
                .contains("forbidden path outside the build context: ../outside ()"),
            "{e}"
        );
        let e = resolve_sources(dir.path(), &["nothere".into()], "COPY").unwrap_err();
        assert!(
            e.message.contains("stat nothere: file does not exist"),
            "{e}"
        );
        let e = resolve_sources(dir.path(), &["*.none".into()], "ADD").unwrap_err();
        assert!(e.message.contains("no source files"), "{e}");
    }

    #[test]
    fn globs_match_in_order_and_paths_resolve() {
        let dir = tree();
        let found =
            resolve_sources(dir.path(), &["src/*.rs".into(), "./top.txt".into()], "COPY").unwrap();
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["src/a.rs", "top.txt"]);
    }

    #[test]
    fn the_checksum_follows_content_and_mode_not_mtime() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tree();
        let sum =
            || checksum(&resolve_sources(dir.path(), &[".".into()], "COPY").unwrap()).unwrap();
        let first = sum();
        let file = dir.path().join("src/sub/b.rs");
        let f = std::fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(sum(), first, "an mtime is not content");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        let moded = sum();
        assert_ne!(moded, first);
        std::fs::write(&file, "B").unwrap();
        assert_ne!(sum(), moded);
    }

    #[test]
    fn tars_are_told_by_their_header_and_text_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_old();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_path("x").unwrap();
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        std::fs::write(dir.path().join("v7.tar"), b.into_inner().unwrap()).unwrap();
        std::fs::write(dir.path().join("text"), "x".repeat(600)).unwrap();
        assert!(is_archive(&dir.path().join("v7.tar")).unwrap());
        assert!(!is_archive(&dir.path().join("text")).unwrap());
    }

    #[test]
    fn paths_join_and_split_as_docker_does() {
        assert_eq!(join("/app/", "x"), "/app/x");
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(absolute("/work", "x/../y"), "/work/y");
        assert_eq!(absolute("/work", "/abs"), "/abs");
    }
}
