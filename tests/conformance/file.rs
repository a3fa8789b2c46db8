//! What only `FileStorage` promises: records survive re-open, damage is
//! reported as corruption, one process at a time, tight permissions, clean
//! recovery of leftovers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use keyserver::backends::{FileStorage, RecordCache};
use keyserver::{Error, KeyStorage};

use keyserver::testing::storage::record;

fn record_path(dir: &Path, n: u32) -> PathBuf {
    let id = record(n).key_id().to_string();
    dir.join(&id[..2]).join(format!("{id}.rec"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// All files under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn records_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    {
        let store = FileStorage::open(&dir).await.unwrap();
        for n in 0..50 {
            store.put(&record(n)).await.unwrap();
        }
        assert!(store.delete(record(7).key_id()).await.unwrap());
    }
    let store = FileStorage::open(&dir).await.unwrap();
    assert_eq!(store.count(), 49);
    assert_eq!(store.list().await.unwrap().len(), 49);
    for n in (0..50).filter(|&n| n != 7) {
        assert_eq!(store.get(record(n).key_id()).await.unwrap(), record(n));
    }
    assert!(!store.contains(record(7).key_id()).await.unwrap());
}

#[tokio::test]
async fn damaged_records_are_reported_as_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = FileStorage::open(&dir).await.unwrap();
    // The store reads every record from its file (it keeps none in memory;
    // this process damages them behind its back).
    for n in 0..4 {
        store.put(&record(n)).await.unwrap();
    }
    // A flipped bit, a truncation, an empty file, an oversized file.
    let flip = record_path(&dir, 0);
    let mut bytes = std::fs::read(&flip).unwrap();
    bytes[200] ^= 0x10;
    std::fs::write(&flip, &bytes).unwrap();
    let cut = record_path(&dir, 1);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(record_path(&dir, 2), b"").unwrap();
    std::fs::write(record_path(&dir, 3), vec![0u8; 1 << 20]).unwrap();
    for n in 0..4 {
        let id = *record(n).key_id();
        let err = store.get(&id).await.unwrap_err();
        assert!(
            matches!(err, Error::CorruptRecord { key_id, .. } if key_id == id),
            "record {n}: {err:?}"
        );
        assert!(err.to_string().contains(&id.to_string()));
        assert_eq!(err.code(), 5);
    }
    // A misfiled record (a valid record under another name) is corrupt too.
    store.put(&record(6)).await.unwrap();
    std::fs::copy(record_path(&dir, 6), record_path(&dir, 0)).unwrap();
    assert!(matches!(
        store.get(record(0).key_id()).await,
        Err(Error::CorruptRecord {
            ref reason,
            ..
        }) if reason == "record belongs to another key id"
    ));
}

#[tokio::test]
async fn the_record_cache_is_bounded_and_forgets_deleted_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = RecordCache::new(FileStorage::open(&dir).await.unwrap(), 2);
    for n in 0..5 {
        store.put(&record(n)).await.unwrap();
    }
    // A cached record is served without its file (here: the file is gone,
    // removed behind the store's back), the others are read from disk.
    let hits: Vec<bool> = {
        let mut hits = Vec::new();
        for n in 0..5 {
            let path = record_path(&dir, n);
            let bytes = std::fs::read(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            hits.push(store.get(record(n).key_id()).await.is_ok());
            std::fs::write(&path, bytes).unwrap();
        }
        hits
    };
    assert_eq!(hits.iter().filter(|&&h| h).count(), 2, "{hits:?}");
    for n in 0..5 {
        assert_eq!(store.get(record(n).key_id()).await.unwrap(), record(n));
    }
    // Deleting removes a record from memory as well as from disk.
    let id = *record(4).key_id();
    assert!(store.contains(&id).await.unwrap());
    assert!(store.delete(&id).await.unwrap());
    assert!(matches!(store.get(&id).await, Err(Error::NotFound { .. })));
    assert!(!store.contains(&id).await.unwrap());
    // Shrinking the cache to nothing sends every read to disk.
    store.set_capacity(0);
    assert_eq!(store.cached_len(), 0);
    let path = record_path(&dir, 0);
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        store.get(record(0).key_id()).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_second_opener_is_refused_while_the_first_lives() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let first = FileStorage::open(&dir).await.unwrap();
    let err = FileStorage::open(&dir).await.unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&dir.display().to_string()), "{text}");
    assert!(text.contains("in use by another process"), "{text}");
    drop(first);
    FileStorage::open(&dir).await.unwrap();
}

#[tokio::test]
async fn files_are_0600_and_directories_0700() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = FileStorage::open(&dir).await.unwrap();
    store.put(&record(1)).await.unwrap();
    assert_eq!(mode(&dir), 0o700);
    let rec = record_path(&dir, 1);
    assert_eq!(mode(rec.parent().unwrap()), 0o700);
    for file in walk(&dir) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[tokio::test]
async fn leftover_temporary_files_are_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    {
        let store = FileStorage::open(&dir).await.unwrap();
        store.put(&record(1)).await.unwrap();
    }
    let shard = record_path(&dir, 1).parent().unwrap().to_path_buf();
    std::fs::write(shard.join(".tmp-half-written"), b"KSWR\x01").unwrap();
    let store = FileStorage::open(&dir).await.unwrap();
    assert_eq!(store.count(), 1);
    assert!(walk(&dir).iter().all(|p| !p
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(".tmp-")));
}

#[tokio::test]
async fn a_foreign_directory_is_not_taken_over() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // (Private, so that it is refused as foreign, not for its mode.)
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(tmp.path().join("precious.txt"), b"not yours").unwrap();
    let err = FileStorage::open(tmp.path()).await.unwrap_err();
    assert!(err.to_string().contains("not a keyserver store"), "{err}");
    assert_eq!(
        std::fs::read(tmp.path().join("precious.txt")).unwrap(),
        b"not yours"
    );
}

#[tokio::test]
async fn a_read_only_directory_gives_a_typed_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = FileStorage::open(&dir).await.unwrap();
    store.put(&record(1)).await.unwrap();
    let shard = record_path(&dir, 1).parent().unwrap().to_path_buf();
    let before = walk(&dir);
    for d in [&dir, &shard] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o500)).unwrap();
    }
    // Root ignores permission bits. Then re-run this test in a child process
    // without the capability that overrides them (CAP_DAC_OVERRIDE), if the
    // machine has `setpriv`; otherwise say that the check was skipped.
    let probe = dir.join("probe");
    if std::fs::write(&probe, b"x").is_ok() {
        std::fs::remove_file(&probe).unwrap();
        for d in [&dir, &shard] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        if std::env::var_os("KEYSERVER_NO_DAC_CHILD").is_some() {
            panic!("the child still overrides permissions");
        }
        let status = std::process::Command::new("setpriv")
            .args(["--bounding-set", "-dac_override,-dac_read_search", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "file::a_read_only_directory_gives_a_typed_error_and_writes_nothing",
                "--test-threads=1",
            ])
            .env("KEYSERVER_NO_DAC_CHILD", "1")
            .output();
        match status {
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "the check failed without CAP_DAC_OVERRIDE: {stdout}"
                );
                // A renamed test would make the child run nothing and pass.
                assert!(
                    stdout.contains("running 1 test") && stdout.contains("1 passed"),
                    "the child ran exactly this one test: {stdout}"
                );
            }
            Err(e) => crate::common::unavailable(
                "the read-only directory check",
                format!(
                    "running as root, and `setpriv` (to drop CAP_DAC_OVERRIDE) is not \
                     available: {e}"
                ),
            ),
        }
        return;
    }
    // The shard of record 1 (key ids 00...) and a new shard (01...): both refused.
    for rec in [record(2), record(0x0100_0000)] {
        let err = store.put(&rec).await.unwrap_err();
        assert!(matches!(err, Error::Storage { .. }), "{err:?}");
        assert_eq!(err.code(), 5);
    }
    assert_eq!(store.count(), 1);
    for d in [&dir, &shard] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    assert_eq!(walk(&dir), before, "nothing was written");
}

#[cfg(feature = "cipher-rustcrypto")]
#[tokio::test]
async fn a_key_server_on_files_keeps_its_keys_across_restarts() {
    use keyserver::backends::RustCrypto;
    use keyserver::KeyServer;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (kek, sealed) = {
        let keys = KeyServer::new(RustCrypto::new(), FileStorage::open(&dir).await.unwrap());
        let kek = keys.generate().await.unwrap();
        let sealed = keys.encrypt(&kek, b"Stephan Richter").await.unwrap();
        (kek, sealed)
    };
    let keys = KeyServer::new(RustCrypto::new(), FileStorage::open(&dir).await.unwrap());
    assert_eq!(keys.to_string(), "<KeyServer (1)>");
    assert!(keys.contains(&kek.id()).await.unwrap());
    assert_eq!(
        &keys.decrypt(&kek, &sealed).await.unwrap()[..],
        b"Stephan Richter"
    );
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct TinyDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TinyDisk {
    /// `None` (with the reason) when this process may not mount.
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(TinyDisk { _dir: dir, path })
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_gives_a_typed_error_and_loses_nothing() {
    let disk = match TinyDisk::mount("96k") {
        Ok(disk) => disk,
        Err(reason) => {
            crate::common::unavailable(
                "the full-disk check",
                format!("cannot mount a small tmpfs ({reason})"),
            );
            return;
        }
    };
    let dir = disk.path.join("store");
    let store = FileStorage::open(&dir).await.unwrap();
    let mut stored = Vec::new();
    let mut failure = None;
    // Records in many shards, until the disk is full.
    for n in 0..10_000u32 {
        let rec = record(n.wrapping_mul(0x0101_0101));
        match store.put(&rec).await {
            Ok(()) => stored.push(rec),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let err = failure.expect("a 96 KiB disk fills up");
    assert!(matches!(err, Error::Storage { .. }), "{err:?}");
    assert_eq!(err.code(), 5);
    // What a server would send a client names no server path; the source
    // (for the server's log and a local caller) may.
    let root = disk.path.display().to_string();
    assert!(!err.to_string().contains(&root), "{err}");
    assert!(!stored.is_empty());
    assert_eq!(store.count(), stored.len() as u64);
    drop(store);
    // Everything acknowledged is there and whole; no temporary file is left.
    let store = FileStorage::open(&dir).await.unwrap();
    assert_eq!(store.count(), stored.len() as u64);
    for rec in &stored {
        assert_eq!(&store.get(rec.key_id()).await.unwrap(), rec);
    }
    assert!(walk(&dir).iter().all(|p| !p
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(".tmp-")));
    println!("full disk: {} records stored, then: {err}", stored.len());
}

/// A delete whose future is dropped half way (a client that hung up) still
/// leaves the cache without the record: the file storage finishes the delete
/// on its blocking pool, and a later get must not be served the record from
/// memory. Also: gets racing deletes never resurrect a deleted record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_cache_forgets_a_record_whose_delete_was_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = std::sync::Arc::new(RecordCache::new(FileStorage::open(&dir).await.unwrap(), 64));
    let id = *record(1).key_id();
    store.put(&record(1)).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap(), record(1), "cached");
    {
        let delete = store.delete(&id);
        tokio::pin!(delete);
        // Poll once (the blocking delete starts), then drop the future.
        assert!(futures_poll_once(delete.as_mut()).await.is_none());
    }
    // The blocking pool finishes the delete; wait for the file to go
    // (bounded: a few seconds at most).
    let path = record_path(&dir, 1);
    for _ in 0..500 {
        if !path.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!path.exists(), "the delete finished");
    assert!(
        matches!(store.get(&id).await, Err(Error::NotFound { .. })),
        "a deleted record is not served from memory"
    );

    // Gets racing deletes: once every delete has returned, nothing deleted
    // is served.
    for n in 10..60 {
        store.put(&record(n)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for n in 10..60u32 {
        let getter = std::sync::Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let _ = getter.get(record(n).key_id()).await;
            }
        }));
        let deleter = std::sync::Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            deleter.delete(record(n).key_id()).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for n in 10..60u32 {
        assert!(
            matches!(
                store.get(record(n).key_id()).await,
                Err(Error::NotFound { .. })
            ),
            "record {n} deleted"
        );
    }
}

/// Polls `future` once: `Some` if it finished.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut future: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// An existing store directory that group or others may enter is refused
/// at start, with the command that fixes it; after the fix it opens.
#[tokio::test]
async fn a_store_open_to_group_or_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    drop(FileStorage::open(&dir).await.unwrap());
    for open in [0o755, 0o750, 0o701] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(open)).unwrap();
        let err = FileStorage::open(&dir).await.unwrap_err();
        assert_eq!(err.code(), 5);
        assert!(
            err.to_string()
                .contains(&format!("chmod 700 {}", dir.display())),
            "{err}"
        );
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    FileStorage::open(&dir).await.unwrap();
}

/// A record or metadata file that is a symbolic link is refused, whether
/// it was there at open or made while the store runs; a shard directory
/// that is a link, or that group or others may write, is refused at open.
/// (A link would let whoever may write its target choose what the store
/// reads.)
#[tokio::test]
async fn symbolic_links_and_open_shards_are_refused() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = FileStorage::open(&dir).await.unwrap();
    store.put(&record(0)).await.unwrap();
    store.put(&record(1)).await.unwrap();
    // A record replaced by a link to a valid copy of itself, while running.
    let linked = record_path(&dir, 0);
    let outside = tmp.path().join("outside.rec");
    std::fs::rename(&linked, &outside).unwrap();
    symlink(&outside, &linked).unwrap();
    let err = store.get(record(0).key_id()).await.unwrap_err();
    assert_eq!(err.code(), 5, "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    drop(store);
    // At open: refused, naming it.
    let err = FileStorage::open(&dir).await.unwrap_err();
    assert!(
        err.to_string().contains("symbolic link") && err.to_string().contains(".rec"),
        "{err}"
    );
    std::fs::remove_file(&linked).unwrap();
    std::fs::rename(&outside, &linked).unwrap();
    // A shard directory that is a link.
    let shard = record_path(&dir, 1).parent().unwrap().to_owned();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::rename(&shard, &elsewhere).unwrap();
    symlink(&elsewhere, &shard).unwrap();
    let err = FileStorage::open(&dir).await.unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    std::fs::remove_file(&shard).unwrap();
    std::fs::rename(&elsewhere, &shard).unwrap();
    // A shard group or others may write (or enter).
    for open in [0o770, 0o703, 0o750] {
        std::fs::set_permissions(&shard, std::fs::Permissions::from_mode(open)).unwrap();
        let err = FileStorage::open(&dir).await.unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("chmod 700 {}", shard.display())),
            "{open:o}: {err}"
        );
    }
    std::fs::set_permissions(&shard, std::fs::Permissions::from_mode(0o700)).unwrap();
    let store = FileStorage::open(&dir).await.unwrap();
    assert_eq!(store.get(record(0).key_id()).await.unwrap(), record(0));
    assert_eq!(store.get(record(1).key_id()).await.unwrap(), record(1));
}

/// One damaged record does not make `list_keys` fail for everyone: it is
/// left out, named in the log and counted in /metrics.
#[cfg(all(feature = "cipher-rustcrypto", feature = "policy"))]
#[tokio::test]
async fn a_damaged_record_is_left_out_of_list_keys_and_counted() {
    use keyserver::backends::RustCrypto;
    use keyserver::{KeyFilter, KeyServer, KeyService};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let keys = Arc::new(KeyServer::new(
        RustCrypto::new(),
        FileStorage::open(&dir).await.unwrap(),
    ));
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(keys.generate().await.unwrap().id());
    }
    let id = ids[1].to_string();
    let damaged = dir.join(&id[..2]).join(format!("{id}.rec"));
    std::fs::write(&damaged, b"not a record").unwrap();
    let service = keyserver::policy::Policy::new().wrap(Arc::clone(&keys) as Arc<dyn KeyService>);
    let page = service.list_keys(&KeyFilter::default()).await.unwrap();
    let listed: Vec<_> = page.keys.iter().map(|k| k.key_id).collect();
    let mut expected = vec![ids[0], ids[2]];
    expected.sort();
    assert_eq!(listed, expected);
    let mut metrics = String::new();
    service.encode_metrics(&mut metrics);
    assert!(
        metrics.contains("keyserver_records_unreadable_total 1"),
        "{metrics}"
    );
    // Listed again: counted again (each listing that met it).
    service.list_keys(&KeyFilter::default()).await.unwrap();
    let mut metrics = String::new();
    service.encode_metrics(&mut metrics);
    assert!(
        metrics.contains("keyserver_records_unreadable_total 2"),
        "{metrics}"
    );
}
