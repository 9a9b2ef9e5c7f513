//! A layer tar of a container's changes (Docker's commit): each changed
//! path read from the overlay upper directory, each deleted one as an OCI
//! whiteout (`dir/.wh.name`). The list of changes is the caller's (the
//! core's `diff`), so what a commit stores is what `docker diff` shows.

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use berth_errdefs::{Error, Result};

/// One changed path, absolute inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffEntry {
    pub path: String,
    pub deleted: bool,
}

/// Writes the tar of `changes` (parents before children, as a sorted
/// diff lists them), reading added and modified paths under `upper`.
/// Symlinks are stored as links, never followed.
pub fn write_diff_tar(upper: &Path, changes: &[DiffEntry], out: impl Write) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    for change in changes {
        let rel = relative(&change.path)?;
        if change.deleted {
            let name = rel.file_name().unwrap_or_default().to_string_lossy();
            let whiteout = rel.with_file_name(format!(".wh.{name}"));
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(0);
            header.set_mode(0o600);
            builder
                .append_data(&mut header, &whiteout, io::empty())
                .map_err(|e| write_error(&change.path, e))?;
        } else {
            builder
                .append_path_with_name(upper.join(&rel), &rel)
                .map_err(|e| write_error(&change.path, e))?;
        }
    }
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| Error::from(e).context("write layer tar"))
}

/// `/a/b` as `a/b`; anything but plain names is refused.
fn relative(path: &str) -> Result<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::invalid(format!(
            "changed path {path:?} is not a plain path"
        )));
    }
    Ok(rel.to_path_buf())
}

fn write_error(path: &str, e: io::Error) -> Error {
    Error::from(e).context(format!("add {path} to the layer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_and_deletions_become_entries_and_whiteouts() {
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir(upper.path().join("etc")).unwrap();
        std::fs::write(upper.path().join("etc/new"), b"hi").unwrap();
        std::os::unix::fs::symlink("/nowhere", upper.path().join("link")).unwrap();
        let changes = [
            DiffEntry {
                path: "/etc".into(),
                deleted: false,
            },
            DiffEntry {
                path: "/etc/gone".into(),
                deleted: true,
            },
            DiffEntry {
                path: "/etc/new".into(),
                deleted: false,
            },
            DiffEntry {
                path: "/link".into(),
                deleted: false,
            },
        ];
        let mut out = Vec::new();
        write_diff_tar(upper.path(), &changes, &mut out).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let names: Vec<(String, tar::EntryType)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("etc".to_string(), tar::EntryType::Directory),
                ("etc/.wh.gone".to_string(), tar::EntryType::Regular),
                ("etc/new".to_string(), tar::EntryType::Regular),
                ("link".to_string(), tar::EntryType::Symlink),
            ]
        );
    }

    #[test]
    fn a_traversing_change_is_refused() {
        let upper = tempfile::tempdir().unwrap();
        let e = write_diff_tar(
            upper.path(),
            &[DiffEntry {
                path: "/../x".into(),
                deleted: false,
            }],
            Vec::new(),
        )
        .unwrap_err();
        assert!(e.message.contains("not a plain path"), "{e}");
    }
}
