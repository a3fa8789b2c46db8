//! `FileStorage`: one directory, one file per record, durable and crash-safe.
//!
//! Layout of a store directory:
//!
//! ```text
//! DIR/                      0700
//!   keyserver-store         marker: "keyserver file store v1\n"
//!   lock                    advisory lock (flock) held while the store is open
//!   3f/                     shard: the first two hex digits of the key id, 0700
//!     3f9a...e1.rec         one record (docs/FORMAT.md), 0600
//!     3f9a...e1.meta        its lifecycle metadata, if any (replaced by rename), 0600
//!     .tmp-3f9a...e1-P-N    a put in progress (removed at open after a crash)
//! ```
//!
//! A put writes a temporary file in the shard directory, fsyncs it, links it
//! to its final name (`link(2)` fails if the name exists, which makes `put`
//! create-only and atomic), removes the temporary name and fsyncs the shard
//! directory. A crash at any moment leaves either no record or a whole one,
//! plus perhaps a temporary file that the next open removes.
//!
//! A crate of [keyserver](https://github.com/keyserver/keyserver), built only on
//! the public plugin API of `keyserver-core`, as a third party's backend would be.
//! Applications reach it as `keyserver::backends` with its Cargo feature.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use keyserver_core::plugin::blocking;
use keyserver_core::plugin::KeyStorage;
use keyserver_core::{Error, KeyId, KeyMeta, Result, WrappedDek};

const NAME: &str = "file";
const MARKER: &str = "keyserver-store";
const MARKER_TEXT: &str = "keyserver file store v1\n";
const LOCK: &str = "lock";
const TMP_PREFIX: &str = ".tmp-";
const EXT: &str = ".rec";
const META_EXT: &str = ".meta";
/// No valid metadata file is larger.
const MAX_META_LEN: u64 = 8192;
/// No valid record is larger: header 52 + 2048 wrapped bytes + 32 checksum.
const MAX_RECORD_LEN: u64 = 4096;

/// How hard `put` and `delete` work to make changes survive a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// fsync the record and its directory before `put` returns (the default).
    /// An acknowledged key survives a crash or power loss.
    #[default]
    Fsync,
    /// Skip the fsyncs: records are still written atomically (never torn),
    /// but the most recent ones may be lost in a power failure. Only for bulk
    /// loading or tests; never for a server that hands out KEKs.
    NoSync,
}

/// Records in one directory on a local file system: durable, atomic,
/// crash-safe, locked against a second process, sharded for millions of keys.
///
/// `count` is kept in memory after one scan at open; `get`, `contains`, `put`
/// and `delete` touch one file and never scan a directory. Files are created
/// 0600 and directories 0700.
///
/// To serve hot keys from memory (no file read, no hop to the blocking
/// thread pool), wrap it in a [`RecordCache`](keyserver_core::plugin::RecordCache):
/// the directory lock makes this process the only writer, which is what that
/// cache needs. The `keyserver` command does (`--cache-records`).
///
/// Feature `storage-file`.
///
/// # Example
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use keyserver_core::{KeyId, KeyStorage, Strength, WrappedDek};
/// use keyserver_file::FileStorage;
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = FileStorage::open(dir.path().join("keys")).await?;
/// let rec = WrappedDek::new(KeyId::from_bytes([1; 32]), 3072, Strength::S128, 0, vec![0; 384])?;
/// store.put(&rec).await?;
/// drop(store); // releases the lock
///
/// let again = FileStorage::open(dir.path().join("keys")).await?;
/// assert_eq!(again.get(rec.key_id()).await?, rec);
/// assert_eq!(again.count(), 1);
/// # Ok::<(), keyserver_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct FileStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    count: AtomicU64,
    tmp_counter: AtomicU64,
    durability: Durability,
    /// Held open for the lifetime of the store: the advisory lock dies with
    /// it. `None` for a read-only view ([`FileStorage::open_read_only`]),
    /// which takes no lock and writes nothing.
    _lock: Option<File>,
}

fn io_error(message: String, e: std::io::Error) -> Error {
    Error::storage(NAME, message, e)
}

/// A storage error whose message says what failed and whose source names
/// the path: a server sends clients only the message (no server paths);
/// its log and a local caller's report show the source too.
fn path_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::storage(
        NAME,
        what,
        PathIo {
            path: path.to_path_buf(),
            source: e,
        },
    )
}

/// An I/O error on a path.
#[derive(Debug)]
struct PathIo {
    path: PathBuf,
    source: std::io::Error,
}

impl std::fmt::Display for PathIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for PathIo {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl FileStorage {
    /// Opens (creating if needed) the store in `dir`, with fsync durability.
    ///
    /// # Errors
    /// [`Error::Storage`] if the directory cannot be created or read, is not
    /// empty and not a keyserver store, or is held by another live process.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(dir, Durability::Fsync).await
    }

    /// Opens the store in `dir` with the given durability.
    ///
    /// # Errors
    /// As for [`FileStorage::open`].
    pub async fn open_with(dir: impl Into<PathBuf>, durability: Durability) -> Result<Self> {
        let dir = dir.into();
        let inner = blocking(move || Inner::open(dir, durability)).await??;
        Ok(FileStorage {
            inner: Arc::new(inner),
        })
    }

    /// A read-only view of the store in `dir`, which a running server may
    /// hold: for `keyserver backup` without stopping it. It takes no lock,
    /// removes no temporary file and refuses every write. Each record and
    /// metadata file it reads is whole (the server replaces them in one
    /// step: `link`, `rename`, `renameat2`), so each key is read as it was
    /// at one moment; keys changed while it reads are read before or after
    /// the change.
    ///
    /// # Errors
    /// [`Error::Storage`] if `dir` is not a keyserver store.
    pub async fn open_read_only(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let inner = blocking(move || Inner::open_read_only(dir)).await??;
        Ok(FileStorage {
            inner: Arc::new(inner),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Inner {
    fn open(dir: PathBuf, durability: Durability) -> Result<Self> {
        let shown = dir.display().to_string();
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => sync_parent(&dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_error(format!("creating directory {shown}"), e)),
        }?;
        // An existing directory keeps the mode it had: one that group or
        // others may enter would expose the records' names (the key ids)
        // and, if writable, the records themselves.
        let mode = fs::metadata(&dir)
            .map_err(|e| io_error(format!("reading {shown}"), e))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::Storage {
                backend: NAME.into(),
                message: format!(
                    "the store {shown} is open to group or others (mode {mode:03o}); \
                     run: chmod 700 {shown}"
                ),
                source: None,
            });
        }
        let marker = dir.join(MARKER);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(LOCK))
            .map_err(|e| io_error(format!("opening the lock file in {shown}"), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Storage {
                    backend: NAME.into(),
                    message: format!(
                        "the store {shown} is in use by another process (its lock is held)"
                    ),
                    source: None,
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_error(format!("locking {shown}"), e)),
        }
        match fs::read_to_string(&marker) {
            Ok(text) if text == MARKER_TEXT => {}
            Ok(_) => {
                return Err(Error::Storage {
                    backend: NAME.into(),
                    message: format!("{shown} holds a store of an unknown version"),
                    source: None,
                })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // A new store: the directory holds at most the lock and a
                // marker left half-written by a crash during initialisation.
                let foreign = fs::read_dir(&dir)
                    .map_err(|e| io_error(format!("reading {shown}"), e))?
                    .filter_map(|entry| entry.ok())
                    .any(|entry| {
                        let name = entry.file_name();
                        name != LOCK && !name.to_string_lossy().starts_with(TMP_PREFIX)
                    });
                if foreign {
                    return Err(Error::Storage {
                        backend: NAME.into(),
                        message: format!(
                            "{shown} is not empty and is not a keyserver store; refusing to use it"
                        ),
                        source: None,
                    });
                }
                write_durably(
                    &dir,
                    MARKER,
                    MARKER_TEXT.as_bytes(),
                    &format!("{TMP_PREFIX}marker"),
                )
                .map_err(|e| io_error(format!("initialising {shown}"), e))?;
            }
            Err(e) => return Err(path_error("reading the store marker", &marker, e)),
        }
        check_layout(&dir)?;
        let count = recover(&dir)?;
        Ok(Inner {
            dir,
            count: AtomicU64::new(count),
            tmp_counter: AtomicU64::new(0),
            durability,
            _lock: Some(lock),
        })
    }

    /// A read-only view of the store in `dir`, beside the process that
    /// holds it: no lock, no clean-up, nothing written.
    fn open_read_only(dir: PathBuf) -> Result<Self> {
        let shown = dir.display().to_string();
        match fs::read_to_string(dir.join(MARKER)) {
            Ok(text) if text == MARKER_TEXT => {}
            Ok(_) => {
                return Err(Error::Storage {
                    backend: NAME.into(),
                    message: format!("{shown} holds a store of an unknown version"),
                    source: None,
                })
            }
            Err(e) => return Err(path_error("reading the store marker", &dir.join(MARKER), e)),
        }
        let mut count = 0u64;
        for_each_record(&dir, |_| count += 1)?;
        Ok(Inner {
            dir,
            count: AtomicU64::new(count),
            tmp_counter: AtomicU64::new(0),
            durability: Durability::Fsync,
            _lock: None,
        })
    }

    /// Refuses a write to a read-only view.
    fn writable(&self) -> Result<()> {
        if self._lock.is_some() {
            return Ok(());
        }
        Err(Error::Storage {
            backend: NAME.into(),
            message: format!(
                "the store {} is open read-only (another process holds it)",
                self.dir.display()
            ),
            source: None,
        })
    }

    fn shard(&self, id: &KeyId) -> PathBuf {
        let hex = id.to_string();
        self.dir.join(&hex[..2])
    }

    fn path(&self, id: &KeyId) -> PathBuf {
        self.shard(id).join(format!("{id}{EXT}"))
    }

    fn sync(&self) -> bool {
        self.durability == Durability::Fsync
    }

    /// The shard directory of `id`, created (durably) if it is new.
    fn ensure_shard(&self, id: &KeyId) -> Result<PathBuf> {
        let shard = self.shard(id);
        match fs::DirBuilder::new().mode(0o700).create(&shard) {
            Ok(()) if self.sync() => sync_parent(&shard)?,
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(path_error("creating a shard directory", &shard, e)),
        }
        Ok(shard)
    }

    /// A fresh temporary name in `shard` for a write about `id`.
    fn tmp_name(&self, shard: &Path, id: &KeyId, what: &str) -> PathBuf {
        shard.join(format!(
            "{TMP_PREFIX}{id}{what}-{}-{}",
            std::process::id(),
            self.tmp_counter.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn put(&self, record: &WrappedDek) -> Result<()> {
        self.writable()?;
        let id = record.key_id();
        let shard = self.ensure_shard(id)?;
        let tmp = self.tmp_name(&shard, id, "");
        let result = self.put_via(&tmp, &self.path(id), &record.encode());
        // The temporary name goes in every case; the record keeps its link.
        let _ = fs::remove_file(&tmp);
        match result {
            Ok(()) => {
                self.count.fetch_add(1, Ordering::Relaxed);
                // Until the directory is synced the new name may not survive
                // a power loss: report failure (the caller hands out no KEK;
                // the record, if it survives, is an orphan nobody can use).
                if self.sync() {
                    sync_dir(&shard)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                Err(Error::AlreadyExists { key_id: *id })
            }
            Err(e) => Err(io_error(format!("writing the record of {id}"), e)),
        }
    }

    /// Replaces the record of `record`'s key, which must be there: the new
    /// bytes go to a temporary file, which then swaps names with the record
    /// in one step (`renameat2(RENAME_EXCHANGE)`). The swap fails if the
    /// record is gone (a destroyed key is never brought back), and readers
    /// see the old record or the new, never neither.
    fn replace(&self, record: &WrappedDek) -> Result<()> {
        self.writable()?;
        let id = record.key_id();
        let path = self.path(id);
        let shard = self.shard(id);
        let tmp = self.tmp_name(&shard, id, "");
        let write = || -> std::io::Result<()> {
            self.write_tmp(&tmp, &record.encode())?;
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &tmp,
                rustix::fs::CWD,
                &path,
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .map_err(std::io::Error::from)
        };
        let result = write();
        // The temporary name now holds the old record (or the unused new
        // one): it goes in every case.
        let _ = fs::remove_file(&tmp);
        match result {
            Ok(()) => {
                if self.sync() {
                    sync_dir(&shard)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::NotFound { key_id: *id }),
            Err(e) => Err(io_error(format!("replacing the record of {id}"), e)),
        }
    }

    /// Writes `bytes` to the new temporary file `tmp` (0600), synced if
    /// the store is durable: the first step of every write.
    fn write_tmp(&self, tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)?;
        file.write_all(bytes)?;
        if self.sync() {
            file.sync_all()?;
        }
        Ok(())
    }

    fn put_via(&self, tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        if path.exists() {
            return Err(ErrorKind::AlreadyExists.into());
        }
        self.write_tmp(tmp, bytes)?;
        // link(2) is atomic and refuses an existing name: create-only.
        fs::hard_link(tmp, path)
    }

    fn get(&self, id: &KeyId) -> Result<WrappedDek> {
        let path = self.path(id);
        let file = match open_no_follow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::NotFound { key_id: *id })
            }
            Err(e) => return Err(open_error(&format!("the record of {id}"), &path, e)),
        };
        let mut bytes = Vec::with_capacity(2200);
        file.take(MAX_RECORD_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(format!("reading the record of {id}"), e))?;
        if bytes.len() as u64 > MAX_RECORD_LEN {
            return Err(Error::CorruptRecord {
                key_id: *id,
                reason: "file too large".into(),
            });
        }
        WrappedDek::decode(&bytes, id)
    }

    fn contains(&self, id: &KeyId) -> Result<bool> {
        match fs::symlink_metadata(self.path(id)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(format!("looking up {id}"), e)),
        }
    }

    fn delete(&self, id: &KeyId) -> Result<bool> {
        self.writable()?;
        match fs::remove_file(self.path(id)) {
            Ok(()) => {
                if self.sync() {
                    sync_dir(&self.shard(id))?;
                }
                self.count.fetch_sub(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(format!("deleting the record of {id}"), e)),
        }
    }

    fn list(&self) -> Result<Vec<KeyId>> {
        let mut ids = Vec::new();
        for_each_record(&self.dir, |id| ids.push(id))?;
        ids.sort();
        Ok(ids)
    }

    fn meta_path(&self, id: &KeyId) -> PathBuf {
        self.shard(id).join(format!("{id}{META_EXT}"))
    }

    fn get_meta(&self, id: &KeyId) -> Result<Option<KeyMeta>> {
        let path = self.meta_path(id);
        let file = match open_no_follow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(open_error(&format!("the metadata of {id}"), &path, e)),
        };
        let mut bytes = Vec::with_capacity(512);
        file.take(MAX_META_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(format!("reading the metadata of {id}"), e))?;
        if bytes.len() as u64 > MAX_META_LEN {
            return Err(Error::CorruptRecord {
                key_id: *id,
                reason: "metadata file too large".into(),
            });
        }
        KeyMeta::decode(&bytes, id).map(Some)
    }

    /// Writes the metadata through a temporary file, fsync, rename (atomic
    /// replacement) and a directory fsync.
    fn put_meta(&self, meta: &KeyMeta) -> Result<()> {
        self.writable()?;
        let id = &meta.key_id;
        let shard = self.ensure_shard(id)?;
        let tmp = self.tmp_name(&shard, id, "-meta");
        let written = self
            .write_tmp(&tmp, &meta.encode())
            .and_then(|()| fs::rename(&tmp, self.meta_path(id)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(|e| io_error(format!("writing the metadata of {id}"), e))?;
        if self.sync() {
            sync_dir(&shard)?;
        }
        Ok(())
    }

    fn list_all(&self) -> Result<Vec<KeyId>> {
        let mut ids = std::collections::BTreeSet::new();
        for_each_entry(&self.dir, |_, name, _| {
            if let Some(id) = parse_record_name(name)
                .or_else(|| name.strip_suffix(META_EXT).and_then(|hex| hex.parse().ok()))
            {
                ids.insert(id);
            }
            Ok(())
        })?;
        Ok(ids.into_iter().collect())
    }
}

/// Opens `path` for reading, refusing a symbolic link (`O_NOFOLLOW`): a
/// link would let whoever may write its target choose what the store reads.
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The error for a file that could not be opened; a symbolic link (`ELOOP`
/// under `O_NOFOLLOW`) says so.
fn open_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return Error::Storage {
            backend: NAME.into(),
            message: format!(
                "{what} ({}) is a symbolic link; refused (a store holds only its own files)",
                path.display()
            ),
            source: None,
        };
    }
    io_error(format!("opening {what}"), e)
}

/// Checks, at open, that every shard is a directory of its own (not a
/// symbolic link) that only the owner may enter. (The files in them are
/// checked by [`recover`]'s scan.)
fn check_layout(dir: &Path) -> Result<()> {
    let refuse = |message: String| Error::Storage {
        backend: NAME.into(),
        message,
        source: None,
    };
    let entries =
        fs::read_dir(dir).map_err(|e| path_error("reading the store directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| path_error("reading the store directory", dir, e))?;
        if !is_shard_name(&entry.file_name()) {
            continue;
        }
        let shard = entry.path();
        let meta =
            fs::symlink_metadata(&shard).map_err(|e| path_error("reading a shard", &shard, e))?;
        if meta.file_type().is_symlink() {
            return Err(refuse(format!(
                "the shard {} is a symbolic link; a store holds only its own directories",
                shard.display()
            )));
        }
        if !meta.is_dir() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(refuse(format!(
                "the shard {shown} is open to group or others (mode {mode:03o}); run: chmod 700 \
                 {shown}",
                shown = shard.display()
            )));
        }
    }
    Ok(())
}

fn is_shard_name(name: &std::ffi::OsStr) -> bool {
    name.len() == 2
        && name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Scans the store once at open: removes leftover temporary files from a
/// crash and counts the records.
fn recover(dir: &Path) -> Result<u64> {
    let mut count = 0u64;
    let mut removed = false;
    for_each_entry(dir, |path, name, link| {
        if name.ends_with(EXT) || name.ends_with(META_EXT) {
            // What the store reads is never a link (it is opened with
            // O_NOFOLLOW too, for links made while it runs).
            if link {
                return Err(Error::Storage {
                    backend: NAME.into(),
                    message: format!(
                        "{} is a symbolic link; a store holds only its own files (remove it, \
                         or put the file it points to in its place)",
                        path.display()
                    ),
                    source: None,
                });
            }
        }
        if name.starts_with(TMP_PREFIX) {
            fs::remove_file(path).map_err(|e| path_error("removing a temporary file", path, e))?;
            removed = true;
        } else if parse_record_name(name).is_some() {
            count += 1;
        }
        Ok(())
    })?;
    if removed {
        // Make the clean-up itself durable.
        for_each_shard(dir, sync_dir)?;
    }
    Ok(count)
}

fn parse_record_name(name: &str) -> Option<KeyId> {
    name.strip_suffix(EXT)?.parse().ok()
}

fn for_each_record(dir: &Path, mut f: impl FnMut(KeyId)) -> Result<()> {
    for_each_entry(dir, |_, name, _| {
        if let Some(id) = parse_record_name(name) {
            f(id);
        }
        Ok(())
    })
}

fn for_each_shard(dir: &Path, mut f: impl FnMut(&Path) -> Result<()>) -> Result<()> {
    let entries =
        fs::read_dir(dir).map_err(|e| path_error("reading the store directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| path_error("reading the store directory", dir, e))?;
        if is_shard_name(&entry.file_name())
            && entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
        {
            f(&entry.path())?;
        }
    }
    Ok(())
}

/// Calls `f` with the path and name of every entry of every shard, and
/// whether it is a symbolic link (from the directory entry: no `stat`).
fn for_each_entry(dir: &Path, mut f: impl FnMut(&Path, &str, bool) -> Result<()>) -> Result<()> {
    for_each_shard(dir, |shard| {
        let entries =
            fs::read_dir(shard).map_err(|e| path_error("reading a shard directory", shard, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| path_error("reading a shard directory", shard, e))?;
            if let Some(name) = entry.file_name().to_str() {
                let link = entry.file_type().is_ok_and(|t| t.is_symlink());
                f(&entry.path(), name, link)?;
            }
        }
        Ok(())
    })
}

/// Writes `name` in `dir` through a temporary file, fsync and rename.
fn write_durably(dir: &Path, name: &str, bytes: &[u8], tmp_name: &str) -> std::io::Result<()> {
    let tmp = dir.join(tmp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| path_error("syncing a directory", dir, e))
}

fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

#[async_trait]
impl KeyStorage for FileStorage {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn put(&self, record: &WrappedDek) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let stored = record.clone();
        blocking(move || inner.put(&stored)).await?
    }

    async fn get(&self, key_id: &KeyId) -> Result<WrappedDek> {
        let inner = Arc::clone(&self.inner);
        let id = *key_id;
        blocking(move || inner.get(&id)).await?
    }

    async fn replace(&self, record: &WrappedDek) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let stored = record.clone();
        blocking(move || inner.replace(&stored)).await?
    }

    async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        let inner = Arc::clone(&self.inner);
        let id = *key_id;
        blocking(move || inner.contains(&id)).await?
    }

    fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    async fn delete(&self, key_id: &KeyId) -> Result<bool> {
        let inner = Arc::clone(&self.inner);
        let id = *key_id;
        blocking(move || inner.delete(&id)).await?
    }

    async fn list(&self) -> Result<Vec<KeyId>> {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.list()).await?
    }

    fn keeps_lifecycle(&self) -> bool {
        true
    }

    async fn get_meta(&self, key_id: &KeyId) -> Result<Option<KeyMeta>> {
        let inner = Arc::clone(&self.inner);
        let id = *key_id;
        blocking(move || inner.get_meta(&id)).await?
    }

    async fn put_meta(&self, meta: &KeyMeta) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let meta = meta.clone();
        blocking(move || inner.put_meta(&meta)).await?
    }

    async fn list_all(&self) -> Result<Vec<KeyId>> {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.list_all()).await?
    }
}
