//! The audit log: one JSON line per call, each carrying an HMAC-SHA-256
//! under the audit key over the previous line's MAC and its own text, so
//! that a changed, inserted, deleted or reordered line breaks the chain, and
//! whoever rewrites the file without the key cannot forge a valid one.
//!
//! One writer thread owns the file. Calls hand it their line and, for a
//! state-changing call, wait until the line (or, for a new key, its
//! `begun` line) is on disk: the writer takes
//! every line waiting, writes them with one `write`, and makes them durable
//! with one `fdatasync` (group commit), so many concurrent calls share one
//! sync. Read-only calls do not wait; their lines reach the disk with the
//! next sync, at the latest [`IDLE_SYNC`] later.
//!
//! The hand-over is a queue under a mutex, not a channel: a read-only
//! call's line wakes nobody (the writer takes such lines every [`LINGER`],
//! or as soon as [`WAKE_AT`] are waiting), and a durable one wakes the
//! writer only if it sleeps. A channel woke the writer thread for every
//! line: at 30,000 calls a second, a third of the server's CPU went to
//! those wake-ups and the context switches they caused (BENCHMARKS.md, the
//! production configuration).
//!
//! If a line cannot be written, the log is failed: every call is refused
//! (code 5) until the writer has put the file back to its last good line
//! and can write again; it retries every [`RETRY`].
//!
//! Format: see `docs/OPERATIONS.md`.

mod verify;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::os::unix::fs::OpenOptionsExt;

use hmac::{KeyInit, Mac};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::{Error, KeyId, Result};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

use verify::Chain;
pub use verify::{verify_audit, AuditReport, VerifyOptions};

/// Default size at which the log rotates: 64 MiB.
pub const DEFAULT_AUDIT_ROTATE: u64 = 64 << 20;
/// Shortest audit key accepted, in bytes.
pub const MIN_AUDIT_KEY: usize = 32;
/// How long a line of a read-only call may wait for a sync.
const IDLE_SYNC: Duration = Duration::from_secs(1);
/// How often a failed log tries to write again.
const RETRY: Duration = Duration::from_secs(1);
/// Most lines written with one sync.
const MAX_GROUP: usize = 4096;
/// Most lines waiting for the writer; beyond, calls are answered "busy".
const MAX_BACKLOG: usize = 65_536;
/// How long, at most, lines that nobody waits for stay in the queue.
const LINGER: Duration = Duration::from_millis(20);
/// Lines waiting at which the writer is woken even if nobody waits.
const WAKE_AT: usize = 1024;
/// `,"mac":"` + 64 hex digits + `"}`.
const MAC_SUFFIX: usize = 8 + 64 + 2;

/// The audit key: the MAC key of the chain (at least 32 bytes). Wiped on
/// drop; never shown.
#[derive(Clone)]
pub struct AuditKey(Zeroizing<Vec<u8>>);

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey([REDACTED])")
    }
}

impl AuditKey {
    /// A key of these bytes.
    ///
    /// ```
    /// use keyserver::policy::AuditKey;
    /// assert!(AuditKey::new(vec![7; 32]).is_ok());
    /// assert!(AuditKey::new(vec![7; 31]).is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::Policy`] if shorter than [`MIN_AUDIT_KEY`] bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < MIN_AUDIT_KEY {
            return Err(Error::policy(format!(
                "an audit key is at least {MIN_AUDIT_KEY} bytes (keyserver audit new-key makes one)"
            )));
        }
        Ok(AuditKey(bytes))
    }

    /// The key in the file at `path` (its bytes, as they are).
    ///
    /// # Errors
    /// [`Error::Policy`] naming the file if it cannot be read; as
    /// [`AuditKey::new`] if it is too short.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::policy(format!("cannot read the audit key {}: {e}", path.display()))
        })?;
        Self::new(bytes).map_err(|e| Error::policy(format!("audit key {}: {e}", path.display())))
    }

    fn hmac(&self, prev: &[u8; 32], body: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(prev);
        mac.update(body);
        mac
    }

    /// The MAC of a line: over the previous line's MAC and this line's
    /// text up to its own MAC field.
    fn mac(&self, prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
        self.hmac(prev, body).finalize().into_bytes().into()
    }

    /// Whether `mac` is the MAC of `body` after `prev` (in constant time).
    fn verify(&self, prev: &[u8; 32], body: &[u8], mac: &[u8; 32]) -> bool {
        self.hmac(prev, body).verify_slice(mac).is_ok()
    }

    /// The text a head record's tag covers. It starts with a word no line
    /// starts with (lines start with `{`), so a tag is never a line's MAC.
    fn head_body(seq: u64, mac: &[u8; 32]) -> String {
        format!("keyserver-audit-head-v1\n{seq}\n{}", hex::encode(mac))
    }
}

/// One call as the audit log records it. Never a key, a token or a body.
#[derive(Clone, Debug, Default)]
pub(crate) struct Entry {
    pub(crate) principal: String,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) tls_subject: Option<String>,
    pub(crate) protocol: &'static str,
    pub(crate) method: String,
    pub(crate) key_id: Option<KeyId>,
    /// The key a `rotate` made (`key_id` is the one it rotated).
    pub(crate) new_key_id: Option<KeyId>,
    pub(crate) code: i32,
    pub(crate) latency_ms: f64,
    /// Lines of unauthenticated callers left out since the last written
    /// (the flood limit of the audit layer).
    pub(crate) suppressed: u64,
    /// The line of a key about to be stored, written while the storage
    /// writes it (no code or latency yet: the call's own line follows).
    pub(crate) begun: bool,
}

/// A line as written (field order is the line's).
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev: Option<String>,
    /// On `open` lines: this log keeps a head record, so a verifier that
    /// finds no head knows it was removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    anchored: Option<bool>,
    /// On `start` lines: the server's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    /// On `repaired` lines: how many bytes of an incomplete last line were
    /// cut off at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    removed_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    /// Lines of calls by callers that did not authenticate left out before
    /// this one (over the audit layer's rate for them).
    #[serde(skip_serializing_if = "Option::is_none")]
    suppressed: Option<u64>,
    /// A call done while the log could not be written, recorded once it
    /// could (its `time` is when the line was written).
    #[serde(skip_serializing_if = "Option::is_none")]
    late: Option<bool>,
    /// A key a call is storing (`generate`, `rotate`), written durably
    /// while the storage writes the key; the call's own line follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    begun: Option<bool>,
}

/// A line waiting for the writer, and who waits for it.
struct Pending {
    entry: Entry,
    done: Option<tokio::sync::oneshot::Sender<Result<()>>>,
    /// The line of a call that ran: kept through an outage (written after
    /// the `resume` line, marked late), whether or not anyone waits for it.
    kept: bool,
}

/// What the audit log counts (for `/metrics`).
#[derive(Debug, Default)]
pub(crate) struct AuditStats {
    /// Lines on disk.
    pub(crate) lines: AtomicU64,
    /// Syncs done, and their total time in microseconds.
    pub(crate) syncs: AtomicU64,
    pub(crate) sync_micros: AtomicU64,
    /// The latest sync times, in seconds, for the histogram (drained by
    /// the metrics endpoint).
    pub(crate) recent_syncs: Mutex<Vec<f64>>,
}

/// Where the audit log goes.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// The live log file; rotated files sit beside it as `FILE.SEQ` (the
    /// sequence number of their first line, 20 digits).
    pub path: PathBuf,
    /// The MAC key.
    pub key: AuditKey,
    /// Size at which the file rotates.
    pub rotate_bytes: u64,
}

/// The lines handed to the writer, and whether it sleeps.
#[derive(Default)]
struct Queue {
    lines: std::collections::VecDeque<Pending>,
    /// Lines in `lines` that a caller waits for.
    durable: usize,
    /// The writer waits on the condition variable.
    asleep: bool,
    /// ... with a timer that takes the lines waiting within [`LINGER`]
    /// (a line nobody waits for need not wake it).
    lingering: bool,
    /// No more lines come (close): the writer writes what is left and stops.
    closed: bool,
}

/// The queue and the writer's wake-up.
#[derive(Default)]
struct Handover {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Handover {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running audit log. Dropping the last handle lets the writer finish
/// the lines it holds and stop.
pub struct AuditLog {
    queue: Arc<Handover>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    failed: Arc<AtomicBool>,
    stats: Arc<AuditStats>,
    path: PathBuf,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("failed", &self.failed.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

fn audit_error(message: impl Into<String>, source: Option<io::Error>) -> Error {
    Error::Storage {
        backend: "audit".into(),
        message: message.into(),
        source: source.map(|e| Box::new(e) as _),
    }
}

impl AuditLog {
    /// Opens (or creates) the log of `config` and starts its writer. An
    /// existing file is verified first, and a line cut short by a crash is
    /// removed (it was never acknowledged); the chain continues from its
    /// last line.
    ///
    /// # Errors
    /// [`Error::Storage`] if the file cannot be opened or written, or does
    /// not verify under the key (naming the first bad line: move the file
    /// aside, keep it as evidence, and start a new one).
    pub fn open(config: AuditConfig) -> Result<Arc<Self>> {
        let writer = Writer::open(config.clone())?;
        let queue = Arc::new(Handover::default());
        let failed = Arc::clone(&writer.failed);
        let stats = Arc::clone(&writer.stats);
        let handover = Arc::clone(&queue);
        let thread = std::thread::Builder::new()
            .name("keyserver-audit".into())
            .spawn(move || writer.run(&handover))
            .map_err(|e| audit_error("cannot start the audit writer", Some(e)))?;
        Ok(Arc::new(AuditLog {
            queue,
            writer: Mutex::new(Some(thread)),
            failed,
            stats,
            path: config.path,
        }))
    }

    /// Whether lines can be written now (false after a failed write, until
    /// the writer recovers).
    pub fn is_healthy(&self) -> bool {
        !self.failed.load(Ordering::Acquire)
    }

    /// Refuses a call while the log is failed (Vault's rule: nothing happens
    /// that cannot be recorded).
    pub(crate) fn check(&self) -> Result<()> {
        if self.is_healthy() {
            Ok(())
        } else {
            Err(audit_error(
                "the audit log cannot be written; no request is served until it can",
                None,
            ))
        }
    }

    pub(crate) fn stats(&self) -> &AuditStats {
        &self.stats
    }

    /// Records `entry`. With `durable`, returns once its line is on disk
    /// (or the error that kept it off); otherwise at once.
    pub(crate) async fn record(&self, entry: Entry, durable: bool) -> Result<()> {
        self.enqueue(entry, durable, durable).await
    }

    /// Records the line of a call that ran and was already made durable by
    /// another line (a new key's `begun` line): returns once it is queued,
    /// not synced; never refused as busy (it waits for room), and kept
    /// through an outage like a durable line.
    pub(crate) async fn record_kept(&self, entry: Entry) -> Result<()> {
        self.enqueue(entry, false, true).await
    }

    async fn enqueue(&self, entry: Entry, durable: bool, kept: bool) -> Result<()> {
        let (done, wait) = if durable {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let mut pending = Some(Pending { entry, done, kept });
        while let Some(line) = pending.take() {
            let wake = {
                let mut queue = self.queue.lock();
                if queue.closed {
                    return Err(audit_error("the audit log is closed", None));
                }
                if queue.lines.len() >= MAX_BACKLOG {
                    if !kept {
                        // The disk is not keeping up: refuse rather than
                        // hold lines without bound.
                        return Err(Error::Busy {
                            reason: "the audit log is behind".into(),
                        });
                    }
                    // The line of something done (a state change, a DEK
                    // handed out) waits for room: "busy" would tell its
                    // caller that nothing happened.
                    pending = Some(line);
                    false
                } else {
                    queue.lines.push_back(line);
                    queue.durable += usize::from(durable);
                    let wake = queue.asleep
                        && (durable || !queue.lingering || queue.lines.len() >= WAKE_AT);
                    if wake {
                        queue.asleep = false;
                    }
                    wake
                }
            };
            if wake {
                self.queue.wake.notify_one();
            }
            if pending.is_some() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        match wait {
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err(audit_error("the audit writer stopped", None))),
            None => Ok(()),
        }
    }

    /// Stops taking lines, and returns once the writer has written and
    /// synced those it holds (it blocks: call it off the async runtime, or
    /// at the end).
    pub fn close(&self) {
        self.queue.lock().closed = true;
        self.queue.wake.notify_one();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Drop for AuditLog {
    /// The writer writes and syncs the lines it holds, then stops (not
    /// waited for: [`AuditLog::close`] waits).
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.wake.notify_one();
    }
}

/// Size of the head record: one fixed-size block rewritten in place.
const HEAD_LEN: usize = 160;
/// How often, at most, the head record is synced under load.
const HEAD_SYNC: Duration = Duration::from_secs(1);

/// The head record `FILE.head`: the sequence number and MAC of the last
/// line known to be on disk, tagged under the audit key. A log cut back at
/// a line boundary ends before the line its head names, so neither the
/// server nor `audit verify` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    seq: u64,
    mac: [u8; 32],
}

impl Head {
    fn path(log: &Path) -> PathBuf {
        let mut path = log.as_os_str().to_owned();
        path.push(".head");
        PathBuf::from(path)
    }

    /// The record, padded with spaces to [`HEAD_LEN`] bytes.
    fn encode(&self, key: &AuditKey) -> [u8; HEAD_LEN] {
        let tag = key.mac(
            &[0; 32],
            AuditKey::head_body(self.seq, &self.mac).as_bytes(),
        );
        let text = format!(
            "{{\"seq\":{},\"mac\":\"{}\",\"tag\":\"{}\"}}",
            self.seq,
            hex::encode(self.mac),
            hex::encode(tag)
        );
        let mut out = [b' '; HEAD_LEN];
        out[..text.len()].copy_from_slice(text.as_bytes());
        out[HEAD_LEN - 1] = b'\n';
        out
    }

    /// Reads the head record beside `log`: `None` if there is none (or it
    /// is empty); an error if it does not verify under `key`.
    fn read(key: &AuditKey, log: &Path) -> std::result::Result<Option<Head>, String> {
        let path = Head::path(log);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let bad = || format!("the audit head {} does not verify", path.display());
        let value: serde_json::Value = serde_json::from_slice(&text).map_err(|_| bad())?;
        let seq = value["seq"].as_u64().ok_or_else(bad)?;
        let hex32 = |field: &str| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(value[field].as_str().unwrap_or(""), &mut out)
                .map(|()| out)
                .map_err(|_| bad())
        };
        let (mac, tag) = (hex32("mac")?, hex32("tag")?);
        if !key.verify(&[0; 32], AuditKey::head_body(seq, &mac).as_bytes(), &tag) {
            return Err(bad());
        }
        Ok(Some(Head { seq, mac }))
    }
}

/// The writer thread's state.
struct Writer {
    config: AuditConfig,
    file: File,
    /// The head record, rewritten in place after every sync of the log.
    head: File,
    /// Whether the head was written since it was last synced, and when it
    /// was last synced.
    head_dirty: bool,
    head_synced: Instant,
    /// When the file was last synced.
    synced_at: Instant,
    /// Length of the file up to its last good line.
    good_len: u64,
    seq: u64,
    mac: [u8; 32],
    unsynced: bool,
    failed: Arc<AtomicBool>,
    stats: Arc<AuditStats>,
    /// Lines of calls that ran (state changes, DEKs handed out) and could
    /// not be written: written after the `resume` line.
    late: Vec<Entry>,
}

/// Most lines kept for writing after an outage.
const MAX_LATE: usize = 65_536;

/// The line of call `e`.
fn call_line(seq: u64, e: &Entry, late: bool) -> Line<'_> {
    Line {
        seq,
        time: rfc3339_now(),
        principal: Some(&e.principal),
        peer: e.peer.map(|p| p.to_string()),
        tls_subject: e.tls_subject.as_deref(),
        protocol: Some(e.protocol),
        method: Some(&e.method),
        key_id: e.key_id.map(|k| k.to_string()),
        new_key_id: e.new_key_id.map(|k| k.to_string()),
        code: (!e.begun).then_some(e.code),
        latency_ms: (!e.begun).then(|| (e.latency_ms * 1000.0).round() / 1000.0),
        suppressed: (e.suppressed > 0).then_some(e.suppressed),
        late: late.then_some(true),
        begun: e.begun.then_some(true),
        ..Line::empty()
    }
}

/// Verifies the complete lines of `text` (a file's bytes up to its last
/// newline) into `chain`, naming `what` and the line in an error.
fn verify_lines(chain: &mut Chain<'_>, text: &[u8], what: &str) -> Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    for (i, line) in text[..text.len() - 1].split(|&b| b == b'\n').enumerate() {
        chain.line(line).map_err(|reason| {
            audit_error(
                format!(
                    "{what} does not verify at line {}: {reason}; move it and its head aside \
                     (keep them as evidence) to start a new one",
                    i + 1
                ),
                None,
            )
        })?;
    }
    Ok(())
}

impl Writer {
    fn open(config: AuditConfig) -> Result<Self> {
        let path = &config.path.clone();
        let shown = path.display().to_string();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            // A link in its place would have the server write where the
            // link's author chose.
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| audit_error(format!("cannot open the audit log {shown}"), Some(e)))?;
        // A crash between the two steps of a rotation can leave the live
        // name and the newest rotated name on the same file: finish the
        // rotation (the rotated name keeps it) and start a new live file.
        if let Some(last) = newest_rotated(path)? {
            use std::os::unix::fs::MetadataExt;
            let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| {
                a.dev() == b.dev() && a.ino() == b.ino()
            };
            let live = file.metadata().ok();
            let rotated = std::fs::symlink_metadata(&last).ok();
            if let (Some(live), Some(rotated)) = (live, rotated) {
                if same(&live, &rotated) {
                    std::fs::remove_file(path)
                        .and_then(|()| sync_dir(path))
                        .map_err(|e| {
                            audit_error(format!("cannot finish rotating {shown}"), Some(e))
                        })?;
                    return Writer::open(config);
                }
            }
        }
        let mut text = Vec::new();
        file.read_to_end(&mut text)
            .map_err(|e| audit_error(format!("cannot read the audit log {shown}"), Some(e)))?;
        let head = Head::read(&config.key, path).map_err(|reason| {
            audit_error(
                format!("{reason}; move the log and its head aside (keep them as evidence)"),
                None,
            )
        })?;
        // A line cut short by a crash was never acknowledged: it goes (and
        // a line saying so is the first written).
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut chain = Chain::new(&config.key);
        chain.anchor = head;
        verify_lines(
            &mut chain,
            &text[..complete],
            &format!("the audit log {shown}"),
        )?;
        if complete == 0 {
            // A new live file (the first ever, or after a crash between
            // the two steps of a rotation) continues the chain of the
            // newest rotated file, if there is one.
            if let Some(last) = newest_rotated(path)? {
                let text = std::fs::read(&last)
                    .map_err(|e| audit_error(format!("cannot read {}", last.display()), Some(e)))?;
                let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                verify_lines(
                    &mut chain,
                    &text[..complete],
                    &format!("the rotated audit file {}", last.display()),
                )?;
            }
        }
        chain.finish(&Head::path(path)).map_err(|reason| {
            audit_error(
                format!(
                    "the audit log {shown} {reason}; move it and its head aside (keep them as \
                     evidence) to start a new one"
                ),
                None,
            )
        })?;
        let (seq, mac) = (chain.seq, chain.mac);
        let head_path = Head::path(path);
        let head_file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&head_path)
            .map_err(|e| audit_error(format!("cannot open {}", head_path.display()), Some(e)))?;
        let mut writer = Writer {
            config,
            file,
            head: head_file,
            head_dirty: false,
            head_synced: Instant::now(),
            synced_at: Instant::now(),
            good_len: complete as u64,
            seq,
            mac,
            unsynced: false,
            failed: Arc::default(),
            stats: Arc::default(),
            late: Vec::new(),
        };
        // The head names the chain as verified before anything is added to
        // it: a log that keeps a head always has one.
        writer
            .write_head()
            .and_then(|()| writer.sync_head())
            .and_then(|()| sync_dir(path))
            .map_err(|e| audit_error(format!("cannot write {}", head_path.display()), Some(e)))?;
        let torn = (text.len() - complete) as u64;
        if torn > 0 {
            writer
                .file
                .set_len(writer.good_len)
                .and_then(|()| writer.file.sync_data())
                .map_err(|e| {
                    audit_error(format!("cannot repair the audit log {shown}"), Some(e))
                })?;
            tracing::warn!(
                target: "keyserver::audit",
                "the audit log {shown} ended in an incomplete line of {torn} bytes (a crash): \
                 removed it, and recorded that in the log"
            );
        }
        let mut buf = Vec::new();
        if writer.good_len == 0 {
            writer.append_open_line(&mut buf);
        }
        if torn > 0 {
            let line = Line {
                seq: writer.seq + 1,
                time: rfc3339_now(),
                event: Some("repaired"),
                removed_bytes: Some(torn),
                ..Line::empty()
            };
            writer.append(&line, &mut buf);
        }
        let line = Line {
            seq: writer.seq + 1,
            time: rfc3339_now(),
            event: Some("start"),
            version: Some(env!("CARGO_PKG_VERSION")),
            ..Line::empty()
        };
        writer.append(&line, &mut buf);
        writer
            .write_and_sync(&buf)
            .map_err(|e| audit_error(format!("cannot write the audit log {shown}"), Some(e)))?;
        Ok(writer)
    }

    /// The first line of a file: where its chain comes from.
    fn append_open_line(&mut self, buf: &mut Vec<u8>) {
        let line = Line {
            seq: self.seq + 1,
            time: rfc3339_now(),
            event: Some("open"),
            prev: Some(hex::encode(self.mac)),
            anchored: Some(true),
            ..Line::empty()
        };
        self.append(&line, buf);
    }

    /// Writes the open line of a new file.
    fn write_open_line(&mut self) -> Result<()> {
        let (seq, mac) = (self.seq, self.mac);
        let mut buf = Vec::new();
        self.append_open_line(&mut buf);
        self.write_and_sync(&buf).map_err(|e| {
            // The chain goes on from the last line that was written.
            self.seq = seq;
            self.mac = mac;
            let _ = self.file.set_len(self.good_len);
            audit_error("cannot write the audit log", Some(e))
        })
    }

    /// Rewrites the head record with the chain's last line (call only when
    /// every line up to it is on disk).
    fn write_head(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let record = Head {
            seq: self.seq,
            mac: self.mac,
        }
        .encode(&self.config.key);
        self.head.write_all_at(&record, 0)?;
        self.head_dirty = true;
        Ok(())
    }

    fn sync_head(&mut self) -> io::Result<()> {
        self.head.sync_data()?;
        self.head_dirty = false;
        self.head_synced = Instant::now();
        Ok(())
    }

    /// Formats `line`, chains it and appends it to `buf`.
    fn append(&mut self, line: &Line<'_>, buf: &mut Vec<u8>) {
        let start = buf.len();
        serde_json::to_writer(&mut *buf, line)
            .unwrap_or_else(|_| unreachable!("audit lines always serialise"));
        buf.pop(); // the closing brace
        let mac = self.config.key.mac(&self.mac, &buf[start..]);
        buf.extend_from_slice(b",\"mac\":\"");
        buf.extend_from_slice(hex::encode(mac).as_bytes());
        buf.extend_from_slice(b"\"}\n");
        self.seq = line.seq;
        self.mac = mac;
    }

    fn write_and_sync(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.sync()?;
        self.good_len += buf.len() as u64;
        self.stats
            .lines
            .fetch_add(bytecount_lines(buf), Ordering::Relaxed);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let start = Instant::now();
        self.file.sync_data()?;
        let took = start.elapsed();
        self.unsynced = false;
        self.synced_at = Instant::now();
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        self.stats.sync_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        {
            let mut recent = self
                .stats
                .recent_syncs
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if recent.len() < 65536 {
                recent.push(took.as_secs_f64());
            }
        }
        // Every line written is on disk: the head may name the last one.
        self.write_head()
    }

    /// Waits for lines to write, up to `wait`: returns those there are (up
    /// to [`MAX_GROUP`]), and whether the log is closed and empty. Lines
    /// nobody waits for linger up to [`LINGER`], so that one wake-up takes
    /// many; a line a caller waits for, or [`WAKE_AT`] lines, end the wait.
    fn take(handover: &Handover, wait: Duration) -> (Vec<Pending>, bool) {
        let deadline = Instant::now() + wait;
        let mut linger_until: Option<Instant> = None;
        let mut queue = handover.lock();
        loop {
            if queue.durable > 0 || queue.lines.len() >= WAKE_AT || queue.closed {
                break;
            }
            let now = Instant::now();
            if !queue.lines.is_empty() && linger_until.is_none() {
                linger_until = Some(now + LINGER);
            }
            let until = linger_until.map_or(deadline, |l| l.min(deadline));
            if now >= until {
                break;
            }
            queue.asleep = true;
            queue.lingering = linger_until.is_some();
            queue = handover
                .wake
                .wait_timeout(queue, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            queue.asleep = false;
            queue.lingering = false;
        }
        let n = queue.lines.len().min(MAX_GROUP);
        let batch: Vec<Pending> = queue.lines.drain(..n).collect();
        queue.durable -= batch.iter().filter(|p| p.done.is_some()).count();
        let finished = queue.closed && batch.is_empty();
        (batch, finished)
    }

    fn run(mut self, handover: &Handover) {
        loop {
            let wait = if self.failed.load(Ordering::Acquire) {
                RETRY
            } else if self.unsynced || self.head_dirty {
                IDLE_SYNC
            } else {
                Duration::from_secs(3600)
            };
            let (batch, finished) = Self::take(handover, wait);
            if finished {
                break;
            }
            if self.failed.load(Ordering::Acquire) {
                self.recover();
            }
            if batch.is_empty() {
                if self.unsynced && self.sync().is_err() {
                    self.fail(None);
                }
                if self.head_dirty && self.sync_head().is_err() {
                    self.fail(None);
                }
                continue;
            }
            self.write_batch(batch);
            // Under steady read-only traffic the wait never times out: lines
            // nobody waits for are still synced within IDLE_SYNC.
            if self.unsynced && self.synced_at.elapsed() >= IDLE_SYNC && self.sync().is_err() {
                self.fail(None);
            }
            if self.head_dirty
                && self.head_synced.elapsed() >= HEAD_SYNC
                && self.sync_head().is_err()
            {
                self.fail(None);
            }
        }
        if self.failed.load(Ordering::Acquire) {
            // One last try, for the lines of calls that ran.
            self.recover();
        }
        if self.failed.load(Ordering::Acquire) {
            // Leave the file at its last good line.
            let _ = self.file.set_len(self.good_len);
            if !self.late.is_empty() {
                tracing::error!(
                    target: "keyserver::audit",
                    "stopping with {} lines of calls made while the audit log {} could not be \
                     written, never written",
                    self.late.len(),
                    self.config.path.display()
                );
            }
            return;
        }
        // A clean stop says so: a log whose last run has no stop line
        // ended in a crash (or was cut).
        let line = Line {
            seq: self.seq + 1,
            time: rfc3339_now(),
            event: Some("stop"),
            ..Line::empty()
        };
        let mut buf = Vec::new();
        self.append(&line, &mut buf);
        let stopped = self.write_and_sync(&buf).and_then(|()| self.sync_head());
        if let Err(e) = stopped {
            tracing::error!(
                target: "keyserver::audit",
                "cannot write the stop line of the audit log {}: {e}",
                self.config.path.display()
            );
        }
    }

    /// Keeps the lines of calls that ran (durable and kept ones) for after
    /// the outage, and tells those who wait that the log cannot be written
    /// now.
    fn keep_late(&mut self, batch: Vec<Pending>) {
        for p in batch {
            if p.kept && self.late.len() < MAX_LATE {
                self.late.push(p.entry);
            }
            if let Some(done) = p.done {
                let _ = done.send(Err(audit_error("the audit log cannot be written", None)));
            }
        }
    }

    fn write_batch(&mut self, batch: Vec<Pending>) {
        if self.failed.load(Ordering::Acquire) {
            self.keep_late(batch);
            return;
        }
        let (seq, mac) = (self.seq, self.mac);
        let mut buf = Vec::with_capacity(batch.len() * 256);
        let mut durable = false;
        for p in &batch {
            durable |= p.done.is_some();
            let line = call_line(self.seq + 1, &p.entry, false);
            self.append(&line, &mut buf);
        }
        let written = self.file.write_all(&buf).and_then(|()| {
            if durable {
                self.sync()
            } else {
                self.unsynced = true;
                Ok(())
            }
        });
        if let Err(e) = written {
            // The chain goes on from the last good line; the part written
            // is cut off (best effort: the recovery does it again).
            self.seq = seq;
            self.mac = mac;
            let _ = self.file.set_len(self.good_len);
            self.fail(Some(e));
            self.keep_late(batch);
            return;
        }
        self.good_len += buf.len() as u64;
        self.stats
            .lines
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for p in batch {
            if let Some(done) = p.done {
                let _ = done.send(Ok(()));
            }
        }
        if self.good_len >= self.config.rotate_bytes {
            if let Err(e) = self.rotate() {
                self.fail(Some(e));
            }
        }
    }

    fn fail(&mut self, error: Option<io::Error>) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            let why = error.map_or_else(|| "sync failed".to_string(), |e| e.to_string());
            tracing::error!(
                target: "keyserver::audit",
                "the audit log {} cannot be written ({why}): refusing every request until it can",
                self.config.path.display()
            );
        }
    }

    /// Puts the file back to its last good line and proves it can be
    /// written again by writing (and syncing) a `resume` line, which also
    /// records the outage in the chain. Until that works, the log stays
    /// failed (and the file ends at its last good line).
    fn recover(&mut self) {
        // Cut back to the last good line; never lengthen the file.
        let len = self.file.metadata().map_or(self.good_len, |m| m.len());
        self.good_len = self.good_len.min(len);
        let repaired = self
            .file
            .set_len(self.good_len)
            .and_then(|()| self.file.seek(SeekFrom::End(0)).map(|_| ()))
            .and_then(|()| self.file.sync_data());
        if repaired.is_err() {
            return;
        }
        // A new file (after a rotation) starts with its open line.
        if self.good_len == 0 && self.write_open_line().is_err() {
            return;
        }
        let (seq, mac) = (self.seq, self.mac);
        let line = Line {
            seq: self.seq + 1,
            time: rfc3339_now(),
            event: Some("resume"),
            ..Line::empty()
        };
        let mut buf = Vec::new();
        self.append(&line, &mut buf);
        // Then what was done while the log could not be written.
        let late = std::mem::take(&mut self.late);
        for e in &late {
            let line = call_line(self.seq + 1, e, true);
            self.append(&line, &mut buf);
        }
        if self.write_and_sync(&buf).is_err() {
            self.late = late;
            self.seq = seq;
            self.mac = mac;
            let _ = self.file.set_len(self.good_len);
            return;
        }
        self.failed.store(false, Ordering::Release);
        tracing::warn!(
            target: "keyserver::audit",
            "the audit log {} can be written again: serving requests",
            self.config.path.display()
        );
    }

    /// Renames the full file to `FILE.SEQ` (its first line's number) and
    /// starts a new one whose first line continues the chain.
    fn rotate(&mut self) -> io::Result<()> {
        // Every line of the full file is on disk before a new file points
        // to its last one.
        self.file.sync_data()?;
        self.unsynced = false;
        let first = first_seq(&self.config.path)?;
        let mut rotated = self.config.path.clone().into_os_string();
        rotated.push(format!(".{first:020}"));
        // link(2) never replaces an existing file: an old rotated file with
        // that name stays (and this rotation fails, so the log says so).
        std::fs::hard_link(&self.config.path, &rotated)?;
        std::fs::remove_file(&self.config.path)?;
        // From here the live name is a new, empty file: whatever fails
        // next, the recovery starts it with its open line (and never
        // writes the old length into it).
        self.good_len = 0;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.config.path)?;
        sync_dir(&self.config.path)?;
        self.write_open_line()
            .map_err(|_| io::Error::other("cannot start the new audit file"))
    }
}

/// Makes the directory entries of the directory holding `path` durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

fn bytecount_lines(buf: &[u8]) -> u64 {
    buf.iter().filter(|&&b| b == b'\n').count() as u64
}

impl Line<'_> {
    fn empty() -> Self {
        Line {
            seq: 0,
            time: String::new(),
            event: None,
            prev: None,
            anchored: None,
            version: None,
            removed_bytes: None,
            principal: None,
            peer: None,
            tls_subject: None,
            protocol: None,
            method: None,
            key_id: None,
            new_key_id: None,
            code: None,
            latency_ms: None,
            suppressed: None,
            late: None,
            begun: None,
        }
    }
}

/// The newest rotated file beside the live log `path` (`FILE.SEQ`, the
/// largest SEQ).
fn newest_rotated(path: &Path) -> Result<Option<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(None);
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let entries = std::fs::read_dir(dir)
        .map_err(|e| audit_error(format!("cannot read {}", dir.display()), Some(e)))?;
    let mut newest: Option<(u64, PathBuf)> = None;
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let Some(seq) = file.strip_prefix(&prefix) else {
            continue;
        };
        if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let seq: u64 = seq.parse().unwrap_or(0);
        if newest.as_ref().is_none_or(|(n, _)| seq > *n) {
            newest = Some((seq, entry.path()));
        }
    }
    Ok(newest.map(|(_, p)| p))
}

/// The sequence number of the first line of the file at `path`.
fn first_seq(path: &Path) -> io::Result<u64> {
    let mut first = String::new();
    io::BufReader::new(File::open(path)?).read_line(&mut first)?;
    let value: serde_json::Value = serde_json::from_str(first.trim_end())
        .map_err(|_| io::Error::other("the audit file's first line is not JSON"))?;
    value["seq"]
        .as_u64()
        .ok_or_else(|| io::Error::other("the audit file's first line has no seq"))
}

/// Now as RFC 3339 in UTC with microseconds: `2026-11-29T15:04:05.123456Z`.
pub(crate) fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    crate::lifecycle::rfc3339_micros(now.as_secs(), now.subsec_micros())
}

#[cfg(test)]
mod tests;
