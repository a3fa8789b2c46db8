//! Moving and keeping keys: [`copy_keys`] between two storages, and a
//! checksummed backup file ([`write_backup`], [`read_backup`],
//! [`restore_backup`]).
//!
//! A backup holds wrapped DEKs: without the KEKs they are useless, but with
//! a KEK a backup taken before a key was destroyed still gives its DEK.
//! A destroyed key is destroyed only once every backup that holds it is
//! destroyed too (docs/OPERATIONS.md).
//!
//! Backup file format (version 1), JSON lines:
//!
//! ```text
//! {"format":"keyserver-backup","version":1,"created":"2026-12-05T22:00:00Z"}
//! {"key_id":"HEX","record":"HEX"|null,"meta":"HEX"|null}      one line per key, ascending
//! {"keys":N,"sha256":"HEX"}                                   SHA-256 of every byte above
//! ```
//!
//! `record` and `meta` are the record and key-metadata encodings of
//! docs/FORMAT.md, each checked on its own (a record's checksum, the
//! metadata's digest) as well as by the file's SHA-256.

use std::fmt;
use std::io::{BufRead, Write};

use sha2::{Digest, Sha256};

use crate::lifecycle::rfc3339;
use crate::{Error, KeyId, KeyMeta, KeyState, KeyStorage, Result, WrappedDek};

/// What [`copy_keys`] or [`restore_backup`] did, key by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyReport {
    /// Keys looked at.
    pub keys: u64,
    /// Records written to the destination.
    pub records_copied: u64,
    /// Records the destination already held, byte for byte.
    pub records_present: u64,
    /// Metadata written (the destination had none for the key).
    pub metas_copied: u64,
    /// Keys whose metadata differs at the destination: the destination's
    /// is kept (a copy or a restore never undoes a state change made there,
    /// such as a suspension or a destruction).
    pub metas_kept: u64,
    /// Records not copied because the destination holds the key's tombstone
    /// (destroyed there: never brought back).
    pub destroyed_skipped: u64,
}

impl fmt::Display for CopyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} keys: {} records copied, {} already there, {} metadata written, \
             {} with other metadata at the destination (kept), \
             {} destroyed at the destination (not brought back)",
            self.keys,
            self.records_copied,
            self.records_present,
            self.metas_copied,
            self.metas_kept,
            self.destroyed_skipped
        )
    }
}

/// One key as it moves: its record (if any) and its metadata (if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key.
    pub key_id: KeyId,
    /// Its wrapped DEK, unless destroyed.
    pub record: Option<WrappedDek>,
    /// Its lifecycle metadata, if it ever changed state or has an owner.
    pub meta: Option<KeyMeta>,
}

/// Reads one key from `from`.
async fn read_entry<S: KeyStorage + ?Sized>(from: &S, key_id: KeyId) -> Result<KeyEntry> {
    // A store that servers change meanwhile: the metadata is read again
    // after the record, and the pair is taken only if it did not change
    // in between (tried a few times), so a key is read as one state.
    let mut tries = 0;
    loop {
        let meta = from.get_meta(&key_id).await?;
        let record = match from.get(&key_id).await {
            Ok(record) => Some(record),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        tries += 1;
        if tries >= 4 || from.get_meta(&key_id).await? == meta {
            return Ok(KeyEntry {
                key_id,
                record,
                meta,
            });
        }
    }
}

/// Writes one key to `to`, idempotently, under the key's lock (servers
/// using `to` may change the key meanwhile): metadata first, and only where
/// the destination has none (so a key suspended where it comes from is
/// never active, even for a moment, where it goes, and no state set at the
/// destination is undone), then the record, read back and compared. A key
/// destroyed at either end gets no record.
async fn write_entry<S: KeyStorage + ?Sized>(
    to: &S,
    entry: &KeyEntry,
    report: &mut CopyReport,
) -> Result<()> {
    let id = entry.key_id;
    report.keys += 1;
    let _lock = to.lock_key(&id).await?;
    let there = to.get_meta(&id).await?;
    let destroyed_there = there
        .as_ref()
        .is_some_and(|m| m.state == KeyState::Destroyed);
    if let Some(meta) = &entry.meta {
        match &there {
            None => {
                if !to.keeps_lifecycle() {
                    return Err(Error::policy(format!(
                        "key {id} has lifecycle metadata and the {} storage keeps none",
                        to.name()
                    )));
                }
                to.put_meta(meta).await?;
                report.metas_copied += 1;
            }
            Some(there) if there != meta => report.metas_kept += 1,
            Some(_) => {}
        }
    }
    let destroyed_here = entry
        .meta
        .as_ref()
        .is_some_and(|m| m.state == KeyState::Destroyed);
    let Some(record) = &entry.record else {
        return Ok(());
    };
    if destroyed_there || destroyed_here {
        report.destroyed_skipped += 1;
        return Ok(());
    }
    match to.put(record).await {
        Ok(()) => report.records_copied += 1,
        Err(Error::AlreadyExists { .. }) => report.records_present += 1,
        Err(e) => return Err(e),
    }
    let back = to.get(&id).await?;
    if &back != record {
        return Err(Error::Storage {
            backend: to.name().into(),
            message: format!(
                "key {id}: the destination holds a different record under the same key id"
            ),
            source: None,
        });
    }
    Ok(())
}

/// Copies every key of `from` (records and lifecycle metadata, tombstones
/// included) to `to`, verifying each record as it is read (its checksum)
/// and after it is written (read back and compared).
///
/// Idempotent and resumable: run it twice, or again after it stopped half
/// way, and nothing doubles (records are create-only; a record already
/// there must be the same bytes, or the copy stops naming the key).
/// Metadata is written first, then the record, so no key is usable at the
/// destination in a state it did not have at the source. Metadata already
/// at the destination is kept (counted in [`CopyReport::metas_kept`]): a
/// copy never undoes a state change made there. A key destroyed at either
/// end is never given a record.
///
/// # Errors
/// The first storage error of either side; [`Error::Storage`] naming the
/// key if the destination holds a different record under its id;
/// [`Error::Policy`] if a key has metadata and `to` keeps none.
///
/// # Example
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use keyserver::{KeyId, KeyStorage, Strength, WrappedDek};
/// use keyserver::backends::MemoryStorage;
/// use keyserver::transfer::copy_keys;
///
/// let (a, b) = (MemoryStorage::new(), MemoryStorage::new());
/// a.put(&WrappedDek::new(KeyId::from_bytes([1; 32]), 3072, Strength::S128, 0, vec![0; 384])?).await?;
/// assert_eq!(copy_keys(&a, &b).await?.records_copied, 1);
/// assert_eq!(copy_keys(&a, &b).await?.records_present, 1); // nothing doubles
/// assert_eq!(b.count(), 1);
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
pub async fn copy_keys<A, B>(from: &A, to: &B) -> Result<CopyReport>
where
    A: KeyStorage + ?Sized,
    B: KeyStorage + ?Sized,
{
    let mut report = CopyReport::default();
    for id in from.list_all().await? {
        let entry = read_entry(from, id).await?;
        write_entry(to, &entry, &mut report).await?;
    }
    Ok(report)
}

const FORMAT: &str = "keyserver-backup";
const BACKUP_VERSION: u64 = 1;

/// Writes every key of `from` to `out` as a backup file (the module's
/// format); returns how many keys it holds. The caller makes the file
/// durable (the `keyserver backup` command writes a new 0600 file,
/// fsyncs it and renames it into place).
///
/// # Errors
/// Storage errors; [`Error::Io`] if writing fails.
pub async fn write_backup<S: KeyStorage + ?Sized>(
    from: &S,
    out: &mut dyn Write,
    now: u64,
) -> Result<u64> {
    let mut sum = Sha256::new();
    let mut emit = |line: String, out: &mut dyn Write| -> Result<()> {
        sum.update(line.as_bytes());
        sum.update(b"\n");
        writeln!(out, "{line}").map_err(|e| io_error("writing the backup", e))
    };
    let header = serde_json::json!({
        "format": FORMAT,
        "version": BACKUP_VERSION,
        "created": rfc3339(now),
    });
    emit(header.to_string(), out)?;
    let mut keys = 0u64;
    for id in from.list_all().await? {
        let entry = read_entry(from, id).await?;
        if entry.record.is_none() && entry.meta.is_none() {
            // Listed, then gone before it was read (a key of no metadata
            // destroyed at once): nothing to keep.
            continue;
        }
        let line = serde_json::json!({
            "key_id": id.to_string(),
            "record": entry.record.as_ref().map(|r| hex::encode(r.encode())),
            "meta": entry.meta.as_ref().map(|m| hex::encode(m.encode())),
        });
        emit(line.to_string(), out)?;
        keys += 1;
    }
    let trailer = serde_json::json!({"keys": keys, "sha256": hex::encode(sum.clone().finalize())});
    writeln!(out, "{trailer}").map_err(|e| io_error("writing the backup", e))?;
    out.flush().map_err(|e| io_error("writing the backup", e))?;
    Ok(keys)
}

fn io_error(what: &'static str, e: std::io::Error) -> Error {
    Error::Io { what, source: e }
}

/// A backup that does not read back, naming where and what.
fn bad(line: usize, what: impl fmt::Display) -> Error {
    Error::policy(format!("the backup is damaged: line {line}: {what}"))
}

/// Reads and checks a whole backup file: its format, every key's record
/// and metadata, the count, and the SHA-256 of the file. Nothing is
/// returned unless all of it holds.
///
/// # Errors
/// [`Error::Policy`] naming the line and what is wrong (a changed byte, a
/// missing or extra line, a truncated file, another format or version);
/// [`Error::Io`] if reading fails.
pub fn read_backup(input: &mut dyn BufRead) -> Result<Vec<KeyEntry>> {
    let mut sum = Sha256::new();
    let mut entries = Vec::new();
    let mut trailer = None;
    let mut n = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        let read = input
            .read_line(&mut line)
            .map_err(|e| io_error("reading the backup", e))?;
        if read == 0 {
            break;
        }
        n += 1;
        if trailer.is_some() {
            return Err(bad(n, "text after the closing line"));
        }
        let Some(text) = line.strip_suffix('\n') else {
            return Err(bad(n, "the file ends in the middle of a line (truncated)"));
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| bad(n, "not a JSON line"))?;
        if n == 1 {
            if value["format"] != FORMAT {
                return Err(bad(n, "not a keyserver backup"));
            }
            if value["version"] != BACKUP_VERSION {
                return Err(bad(
                    n,
                    format!(
                        "backup version {} is not one this keyserver reads",
                        value["version"]
                    ),
                ));
            }
            sum.update(line.as_bytes());
            continue;
        }
        if value.get("sha256").is_some() {
            trailer = Some(value);
            continue;
        }
        sum.update(line.as_bytes());
        entries.push(parse_entry(&value).map_err(|what| bad(n, what))?);
    }
    if n == 0 {
        return Err(bad(1, "the file is empty"));
    }
    let Some(trailer) = trailer else {
        return Err(bad(n, "no closing line (truncated)"));
    };
    if trailer["keys"].as_u64() != Some(entries.len() as u64) {
        return Err(bad(
            n,
            format!(
                "it says {} keys and holds {}",
                trailer["keys"],
                entries.len()
            ),
        ));
    }
    if trailer["sha256"].as_str() != Some(hex::encode(sum.finalize()).as_str()) {
        return Err(bad(n, "the SHA-256 of the file does not match (changed)"));
    }
    if entries.windows(2).any(|w| w[0].key_id >= w[1].key_id) {
        return Err(bad(n, "keys out of order or repeated"));
    }
    Ok(entries)
}

/// One key line.
fn parse_entry(value: &serde_json::Value) -> std::result::Result<KeyEntry, String> {
    let fields = value.as_object().ok_or("not a JSON object")?;
    if fields.len() != 3
        || ["key_id", "record", "meta"]
            .iter()
            .any(|k| !fields.contains_key(*k))
    {
        return Err("not a key line (key_id, record, meta)".into());
    }
    let key_id: KeyId = value["key_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("no valid key_id")?;
    let field = |name: &str| -> std::result::Result<Option<Vec<u8>>, String> {
        match &value[name] {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) => hex::decode(s)
                .map(Some)
                .map_err(|_| format!("key {key_id}: {name} is not hex")),
            _ => Err(format!("key {key_id}: {name} is not a string")),
        }
    };
    let record = field("record")?
        .map(|bytes| WrappedDek::decode(&bytes, &key_id))
        .transpose()
        .map_err(|e| format!("key {key_id}: {e}"))?;
    let meta = field("meta")?
        .map(|bytes| KeyMeta::decode(&bytes, &key_id))
        .transpose()
        .map_err(|e| format!("key {key_id}: {e}"))?;
    if record.is_none() && meta.is_none() {
        return Err(format!("key {key_id}: neither a record nor metadata"));
    }
    Ok(KeyEntry {
        key_id,
        record,
        meta,
    })
}

/// Restores checked backup entries ([`read_backup`]) into `to`, as
/// [`copy_keys`] would copy them (idempotent; a key destroyed in `to`
/// stays destroyed).
///
/// # Errors
/// As for [`copy_keys`].
pub async fn restore_backup<S: KeyStorage + ?Sized>(
    entries: &[KeyEntry],
    to: &S,
) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    for entry in entries {
        write_entry(to, entry, &mut report).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backends::MemoryStorage;
    use crate::Strength;

    fn record(n: u8) -> WrappedDek {
        WrappedDek::test_record(n)
    }

    async fn store_with_keys() -> MemoryStorage {
        let store = MemoryStorage::new();
        for n in 0..5 {
            store.put(&record(n)).await.unwrap();
        }
        let mut suspended =
            KeyMeta::new(*record(1).key_id(), Strength::S128, 5, Some("app".into()));
        suspended.state = KeyState::Suspended;
        store.put_meta(&suspended).await.unwrap();
        // A tombstone: metadata, no record.
        let mut gone = KeyMeta::new(*record(9).key_id(), Strength::S128, 5, None);
        gone.state = KeyState::Destroyed;
        store.put_meta(&gone).await.unwrap();
        store
    }

    #[tokio::test]
    async fn copy_is_idempotent_and_keeps_states_and_tombstones() {
        let (a, b) = (store_with_keys().await, MemoryStorage::new());
        let first = copy_keys(&a, &b).await.unwrap();
        assert_eq!(
            (first.keys, first.records_copied, first.metas_copied),
            (6, 5, 2)
        );
        let again = copy_keys(&a, &b).await.unwrap();
        assert_eq!(
            (
                again.records_copied,
                again.records_present,
                again.metas_copied
            ),
            (0, 5, 0)
        );
        assert_eq!(b.count(), 5);
        assert_eq!(b.list_all().await.unwrap(), a.list_all().await.unwrap());
        let id = *record(1).key_id();
        assert_eq!(
            b.get_meta(&id).await.unwrap(),
            a.get_meta(&id).await.unwrap()
        );
    }

    #[tokio::test]
    async fn a_key_destroyed_at_the_destination_is_not_brought_back() {
        let a = store_with_keys().await;
        let b = MemoryStorage::new();
        let id = *record(3).key_id();
        let mut gone = KeyMeta::new(id, Strength::S128, 5, None);
        gone.state = KeyState::Destroyed;
        b.put_meta(&gone).await.unwrap();
        let report = copy_keys(&a, &b).await.unwrap();
        assert_eq!(report.destroyed_skipped, 1);
        assert!(!b.contains(&id).await.unwrap());
        assert_eq!(b.get_meta(&id).await.unwrap(), Some(gone));
    }

    #[tokio::test]
    async fn a_copy_never_undoes_a_state_set_at_the_destination() {
        let a = store_with_keys().await;
        let b = MemoryStorage::new();
        copy_keys(&a, &b).await.unwrap();
        // Suspended at the destination after the first copy; the source
        // still says active (no metadata) for key 2 and suspended for 1.
        let id = *record(2).key_id();
        let mut suspended = KeyMeta::new(id, Strength::S128, 7, None);
        suspended.state = KeyState::Compromised;
        b.put_meta(&suspended).await.unwrap();
        let mut resumed = a.get_meta(record(1).key_id()).await.unwrap().unwrap();
        resumed.state = KeyState::Active;
        a.put_meta(&resumed).await.unwrap();
        let again = copy_keys(&a, &b).await.unwrap();
        assert_eq!(again.metas_kept, 1, "{again}");
        assert_eq!(b.get_meta(&id).await.unwrap(), Some(suspended));
        assert_eq!(
            b.get_meta(record(1).key_id()).await.unwrap().unwrap().state,
            KeyState::Suspended,
            "not resumed by a copy"
        );
    }

    #[tokio::test]
    async fn a_different_record_under_the_same_id_stops_the_copy() {
        let a = store_with_keys().await;
        let b = MemoryStorage::new();
        let mine = record(2);
        let other = WrappedDek::new(*mine.key_id(), 3072, Strength::S128, 1, vec![7; 384]).unwrap();
        b.put(&other).await.unwrap();
        let err = copy_keys(&a, &b).await.unwrap_err();
        assert!(
            err.to_string().contains(&mine.key_id().to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_backup_round_trips_and_any_damage_is_refused_by_name() {
        let a = store_with_keys().await;
        let mut file = Vec::new();
        assert_eq!(write_backup(&a, &mut file, 1_800_000_000).await.unwrap(), 6);
        let entries = read_backup(&mut file.as_slice()).unwrap();
        let b = MemoryStorage::new();
        let report = restore_backup(&entries, &b).await.unwrap();
        assert_eq!(report.records_copied, 5);
        assert_eq!(b.list_all().await.unwrap(), a.list_all().await.unwrap());

        let refused = |bytes: &[u8]| read_backup(&mut &bytes[..]).unwrap_err().to_string();
        // Truncated anywhere.
        for cut in [0, 10, file.len() / 2, file.len() - 1] {
            let why = refused(&file[..cut]);
            assert!(why.contains("damaged"), "{cut}: {why}");
        }
        // Every changed byte of a key line (one in 7 to keep this quick).
        let text = String::from_utf8(file.clone()).unwrap();
        let second = text.find('\n').unwrap() + 1;
        let third = second + text[second..].find('\n').unwrap();
        for i in (second..third).step_by(7) {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            let why = refused(&bad);
            assert!(why.contains("line 2"), "{i}: {why}");
        }
        // A line dropped, a line repeated.
        let lines: Vec<&str> = text.lines().collect();
        let without: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        assert!(refused(without.as_bytes()).contains("keys"));
        let mut doubled: Vec<&str> = lines.clone();
        doubled.insert(3, lines[3]);
        let doubled: String = doubled.iter().map(|l| format!("{l}\n")).collect();
        assert!(refused(doubled.as_bytes()).contains("damaged"));
        // Another format.
        assert!(refused(b"{\"format\":\"x\"}\n").contains("not a keyserver backup"));
    }
}
