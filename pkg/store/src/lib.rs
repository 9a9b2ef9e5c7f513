//! Crash-safe metadata for berth, kept in one redb file.
//!
//! Layout (schema version 1):
//!
//! ```text
//! <root>/meta.redb
//! ├── meta                "schema_version" -> u32 (little endian)
//! ├── <collection>        key (&str) -> serde JSON record (bytes)
//! │   ├── sandboxes         sandbox id   -> core's sandbox record
//! │   ├── containers        container id -> core's container record
//! │   ├── images            image id ("sha256:<config digest>") -> berth-image's record
//! │   ├── ipam_leases       "<subnet>/<address>" -> berth-net's lease
//! │   └── network_settings  "pod_cidr/<bridge>" -> the bridge's subnet
//! └── unreadable.<collection>   records moved aside by [`Store::move_aside`]
//! ```
//!
//! The store knows nothing of the records' types: owners encode and decode
//! them (serde JSON). [`Store::list`] and [`Store::get`] decode and fail on
//! a record that does not; start-up recovery instead reads
//! [`Store::list_raw`], decodes each record itself and moves the ones it
//! cannot read aside ([`Store::move_aside`]), so one bad record never keeps
//! the node from starting and its bytes stay on disk for an admin
//! ([`Store::list_aside`]).
//!
//! Every write is one redb transaction committed with immediate durability
//! before the caller acknowledges anything ("write before you publish"), so a
//! crash leaves either the old or the new state, never half of a batch.
//! Plain files beside the database go through [`write_atomic`].

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_errdefs::{Error, ErrorKind, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The schema this build writes; a newer one on disk is refused.
pub const SCHEMA_VERSION: u32 = 1;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn store_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("metadata store: {what}: {e}"))
}

/// The metadata database of one berthd root.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) `<dir>/meta.redb` and checks its schema version.
    pub fn open(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir)?;
        let path = dir.join("meta.redb");
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "metadata store {} is in use by another process",
                    path.display()
                ),
            ),
            e => store_error(&format!("open {}", path.display()), e),
        })?;
        // The records hold containers' env (and so Secrets): root only.
        set_mode(&path, 0o600)?;
        let store = Store { db, path };
        store.check_schema()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_schema(&self) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| store_error("begin", e))?;
        {
            let mut meta = tx
                .open_table(META)
                .map_err(|e| store_error("open meta", e))?;
            let found = meta
                .get("schema_version")
                .map_err(|e| store_error("read schema", e))?
                .map(|v| {
                    let b = v.value();
                    u32::from_le_bytes(b.try_into().unwrap_or([0xff; 4]))
                });
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(Error::new(
                        ErrorKind::FailedPrecondition,
                        format!(
                            "metadata store {} has schema version {v}, newer than {SCHEMA_VERSION} that this berthd knows",
                            self.path.display()
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())
                        .map_err(|e| store_error("write schema", e))?;
                }
            }
        }
        tx.commit().map_err(|e| store_error("commit", e))
    }

    /// Reads and decodes every record of a collection, in key order. Fails
    /// on the first record that does not decode (naming it); a caller that
    /// must get past such a record reads [`Store::list_raw`] instead.
    pub fn list<T: DeserializeOwned>(&self, collection: &str) -> Result<Vec<(String, T)>> {
        self.list_raw(collection)?
            .into_iter()
            .map(|(key, bytes)| {
                let record = serde_json::from_slice(&bytes)
                    .map_err(|e| store_error(&format!("decode {collection}/{key}"), e))?;
                Ok((key, record))
            })
            .collect()
    }

    /// Every record of a collection that decodes, in key order; each one
    /// that does not is moved aside ([`Store::move_aside`], its bytes kept)
    /// and its key and decode error returned, so one bad record never
    /// keeps the others from loading.
    pub fn list_readable<T: DeserializeOwned>(&self, collection: &str) -> Result<Readable<T>> {
        let mut out = Readable {
            records: Vec::new(),
            moved_aside: Vec::new(),
        };
        for (key, bytes) in self.list_raw(collection)? {
            match serde_json::from_slice(&bytes) {
                Ok(record) => out.records.push((key, record)),
                Err(e) => {
                    self.move_aside(collection, &key)?;
                    out.moved_aside.push((key, e.to_string()));
                }
            }
        }
        Ok(out)
    }

    /// Every record of a collection as stored (undecoded bytes), in key
    /// order; empty if the collection was never written.
    pub fn list_raw(&self, collection: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let tx = self.db.begin_read().map_err(|e| store_error("begin", e))?;
        let table = match tx.open_table(table(collection)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(store_error(collection, e)),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| store_error(collection, e))? {
            let (k, v) = row.map_err(|e| store_error(collection, e))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Moves the record `collection/key` into [`aside_collection`]`(collection)`
    /// in one durable transaction: it leaves `collection` and its bytes are
    /// kept, never deleted. If a record moved aside earlier already has
    /// that key (an id reused and corrupted again), the new one is kept as
    /// `<key>#2`, `<key>#3`, ... so neither overwrites the other.
    /// A key that is not in `collection` is a NotFound error.
    pub fn move_aside(&self, collection: &str, key: &str) -> Result<()> {
        let aside = aside_collection(collection);
        let tx = self.db.begin_write().map_err(|e| store_error("begin", e))?;
        {
            let mut source = tx
                .open_table(table(collection))
                .map_err(|e| store_error(collection, e))?;
            let Some(bytes) = source
                .remove(key)
                .map_err(|e| store_error(collection, e))?
                .map(|v| v.value().to_vec())
            else {
                return Err(Error::not_found(format!(
                    "metadata store: no record {collection}/{key} to move aside"
                )));
            };
            let mut dest = tx
                .open_table(table(&aside))
                .map_err(|e| store_error(&aside, e))?;
            let mut aside_key = key.to_string();
            let mut n = 1;
            while dest
                .get(aside_key.as_str())
                .map_err(|e| store_error(&aside, e))?
                .is_some()
            {
                n += 1;
                aside_key = format!("{key}#{n}");
            }
            dest.insert(aside_key.as_str(), bytes.as_slice())
                .map_err(|e| store_error(&aside, e))?;
        }
        // Dropping `tx` uncommitted (an error above) aborts it: the record
        // stays where it was.
        tx.commit().map_err(|e| store_error("commit", e))
    }

    /// The records of `collection` that were moved aside, as stored, in key
    /// order.
    pub fn list_aside(&self, collection: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.list_raw(&aside_collection(collection))
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(&self, collection: &str, key: &str) -> Result<Option<T>> {
        let tx = self.db.begin_read().map_err(|e| store_error("begin", e))?;
        let table = match tx.open_table(table(collection)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(store_error(collection, e)),
        };
        let Some(v) = table.get(key).map_err(|e| store_error(collection, e))? else {
            return Ok(None);
        };
        serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| store_error(&format!("decode {collection}/{key}"), e))
    }

    /// Applies a batch of puts and deletes in one durable transaction.
    pub fn write(&self, batch: Batch) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| store_error("begin", e))?;
        for op in batch.ops {
            match op {
                Op::Put(collection, key, bytes) => {
                    let mut t = tx
                        .open_table(table(&collection))
                        .map_err(|e| store_error(&collection, e))?;
                    t.insert(key.as_str(), bytes.as_slice())
                        .map_err(|e| store_error(&collection, e))?;
                }
                Op::Delete(collection, key) => {
                    let mut t = tx
                        .open_table(table(&collection))
                        .map_err(|e| store_error(&collection, e))?;
                    t.remove(key.as_str())
                        .map_err(|e| store_error(&collection, e))?;
                }
            }
        }
        tx.commit().map_err(|e| store_error("commit", e))
    }
}

fn table(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// Where [`Store::move_aside`] keeps `collection`'s unreadable records.
pub fn aside_collection(collection: &str) -> String {
    format!("unreadable.{collection}")
}

/// What [`Store::list_readable`] found.
pub struct Readable<T> {
    /// The records that decode, by key, in key order.
    pub records: Vec<(String, T)>,
    /// Keys moved aside, each with why it did not decode.
    pub moved_aside: Vec<(String, String)>,
}

enum Op {
    Put(String, String, Vec<u8>),
    Delete(String, String),
}

/// Puts and deletes that commit together.
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put<T: Serialize>(self, collection: &str, key: &str, record: &T) -> Result<Self> {
        let bytes = serde_json::to_vec(record)
            .map_err(|e| store_error(&format!("encode {collection}/{key}"), e))?;
        Ok(self.put_raw(collection, key, bytes))
    }

    /// Puts bytes as they are, unencoded: for tests that need a record the
    /// owner cannot read (a corrupt one) while berthd is stopped.
    pub fn put_raw(mut self, collection: &str, key: &str, bytes: Vec<u8>) -> Self {
        self.ops
            .push(Op::Put(collection.to_string(), key.to_string(), bytes));
        self
    }

    pub fn delete(mut self, collection: &str, key: &str) -> Self {
        self.ops
            .push(Op::Delete(collection.to_string(), key.to_string()));
        self
    }

    /// The batch's writes in order, for stores other than this one (fakes
    /// in tests): `(collection, key, Some(bytes))` puts, `None` deletes.
    pub fn writes(&self) -> impl Iterator<Item = (&str, &str, Option<&[u8]>)> {
        self.ops.iter().map(|op| match op {
            Op::Put(c, k, v) => (c.as_str(), k.as_str(), Some(v.as_slice())),
            Op::Delete(c, k) => (c.as_str(), k.as_str(), None),
        })
    }
}

/// Sets `path`'s permission bits (tightening what an older berthd made).
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::from(e).context(format!("chmod {mode:o} {}", path.display())))
}

/// Creates `dir` (and its parents) and gives it `mode`, even if it existed:
/// berthd's directories are closed to other host users (containerd's
/// CVE-2021-41103: image and container contents keep setuid files and
/// device nodes that a local user must not reach).
pub fn private_dir(dir: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(dir)
        .map_err(|e| Error::from(e).context(format!("create {}", dir.display())))?;
    set_mode(dir, mode)
}

/// Writes `bytes` to `path` so that readers see the old or the new content,
/// never a mix: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .ok_or_else(|| Error::invalid(format!("{} has no parent directory", path.display())))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        // Private to root: these files hold exec environments and limits.
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::from(e).context(format!("write {}", path.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Rec {
        n: u32,
    }

    #[test]
    fn batch_commits_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let b = Batch::new()
                .put("things", "a", &Rec { n: 1 })
                .unwrap()
                .put("things", "b", &Rec { n: 2 })
                .unwrap();
            s.write(b).unwrap();
            s.write(Batch::new().delete("things", "a")).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let all: Vec<(String, Rec)> = s.list("things").unwrap();
        assert_eq!(all, vec![("b".to_string(), Rec { n: 2 })]);
        assert_eq!(s.get::<Rec>("things", "a").unwrap(), None);
        assert!(s.list::<Rec>("missing").unwrap().is_empty());
    }

    #[test]
    fn second_open_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path())
            .err()
            .expect("second open must fail");
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
        assert!(err.message.contains("in use"), "{}", err.message);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let tx = s.db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("schema_version", 99u32.to_le_bytes().as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let err = Store::open(dir.path()).err().unwrap();
        assert!(err.message.contains("schema version 99"), "{}", err.message);
    }

    const GARBAGE: &[u8] = b"\x00{not json";

    /// Two good records around a garbage one, written as a corrupt disk or
    /// an older build would leave them.
    fn store_with_garbage(dir: &Path) -> Store {
        let s = Store::open(dir).unwrap();
        let b = Batch::new()
            .put("things", "a", &Rec { n: 1 })
            .unwrap()
            .put_raw("things", "b", GARBAGE.to_vec())
            .put("things", "c", &Rec { n: 3 })
            .unwrap();
        s.write(b).unwrap();
        s
    }

    #[test]
    fn garbage_record_is_listed_raw_next_to_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = store_with_garbage(dir.path());
        let raw = s.list_raw("things").unwrap();
        let keys: Vec<&str> = raw.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(raw[1].1, GARBAGE);
        assert_eq!(
            serde_json::from_slice::<Rec>(&raw[2].1).unwrap(),
            Rec { n: 3 }
        );
        assert!(s.list_raw("missing").unwrap().is_empty());
        // The decoding reader still refuses, naming the record.
        let err = s.list::<Rec>("things").unwrap_err();
        assert!(err.message.contains("decode things/b"), "{}", err.message);
    }

    #[test]
    fn list_readable_moves_the_unreadable_aside_and_returns_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let s = store_with_garbage(dir.path());
        let found = s.list_readable::<Rec>("things").unwrap();
        let moved = found.moved_aside;
        assert_eq!(
            found.records,
            vec![
                ("a".to_string(), Rec { n: 1 }),
                ("c".to_string(), Rec { n: 3 })
            ]
        );
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].0, "b");
        assert_eq!(
            s.list_aside("things").unwrap(),
            vec![("b".to_string(), GARBAGE.to_vec())]
        );
        // Nothing is left to move the second time.
        assert!(s
            .list_readable::<Rec>("things")
            .unwrap()
            .moved_aside
            .is_empty());
    }

    #[test]
    fn move_aside_keeps_the_bytes_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = store_with_garbage(dir.path());
            s.move_aside("things", "b").unwrap();
            let good: Vec<(String, Rec)> = s.list("things").unwrap();
            assert_eq!(
                good,
                vec![
                    ("a".to_string(), Rec { n: 1 }),
                    ("c".to_string(), Rec { n: 3 })
                ]
            );
            assert_eq!(
                s.list_aside("things").unwrap(),
                vec![("b".to_string(), GARBAGE.to_vec())]
            );
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.list_raw("things").unwrap().len(), 2);
        assert_eq!(
            s.list_raw("unreadable.things").unwrap(),
            vec![("b".to_string(), GARBAGE.to_vec())]
        );
    }

    #[test]
    fn move_aside_never_overwrites_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = store_with_garbage(dir.path());
        s.move_aside("things", "b").unwrap();
        s.write(Batch::new().put_raw("things", "b", b"second".to_vec()))
            .unwrap();
        s.move_aside("things", "b").unwrap();
        assert_eq!(
            s.list_aside("things").unwrap(),
            vec![
                ("b".to_string(), GARBAGE.to_vec()),
                ("b#2".to_string(), b"second".to_vec())
            ]
        );
        assert_eq!(s.get::<Rec>("things", "b").unwrap(), None);
    }

    #[test]
    fn move_aside_of_a_missing_record_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store_with_garbage(dir.path());
        let err = s.move_aside("things", "zz").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(err.message.contains("things/zz"), "{}", err.message);
        // The aborted transaction created no quarantine table and moved nothing.
        assert!(s.list_aside("things").unwrap().is_empty());
        assert_eq!(s.list_raw("things").unwrap().len(), 3);
    }

    #[test]
    fn write_atomic_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
