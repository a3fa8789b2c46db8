//! Verifying an audit log and its rotated files: the MAC chain line by
//! line, the head file's anchor, rotation boundaries and a torn tail.

use super::*;

/// Checks lines one after another.
pub(super) struct Chain<'k> {
    pub(super) key: &'k AuditKey,
    pub(super) seq: u64,
    pub(super) mac: [u8; 32],
    pub(super) started: bool,
    /// The head record the chain must reach, if there is one.
    pub(super) anchor: Option<Head>,
    /// Whether a line said this log keeps a head record.
    pub(super) anchored: bool,
    /// `start` lines seen, those that followed a run without a `stop`
    /// line, and whether the last line is a `stop` line.
    pub(super) starts: u64,
    pub(super) unclean: u64,
    pub(super) stopped: bool,
}

impl<'k> Chain<'k> {
    pub(super) fn new(key: &'k AuditKey) -> Self {
        Chain {
            key,
            seq: 0,
            mac: [0; 32],
            started: false,
            anchor: None,
            anchored: false,
            starts: 0,
            unclean: 0,
            stopped: false,
        }
    }

    /// Checks that the chain reached its head record (or that it keeps
    /// none): the end of the log is where the head says.
    pub(super) fn finish(&self, head_path: &Path) -> std::result::Result<(), String> {
        match self.anchor {
            Some(head) if head.seq > self.seq => Err(format!(
                "ends at seq {} but its head {} names seq {}: lines were cut from its end",
                self.seq,
                head_path.display(),
                head.seq
            )),
            None if self.anchored => Err(format!(
                "keeps a head record, and {} is missing or empty: it was removed",
                head_path.display()
            )),
            _ => Ok(()),
        }
    }

    /// Checks `line` (without its newline) as the next of the chain.
    pub(super) fn line(&mut self, line: &[u8]) -> std::result::Result<(), String> {
        let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
        if text.len() < MAC_SUFFIX || !text.is_char_boundary(text.len() - MAC_SUFFIX) {
            return Err("too short to be a line".into());
        }
        let (body, suffix) = text.split_at(text.len() - MAC_SUFFIX);
        let mac_hex = suffix
            .strip_prefix(",\"mac\":\"")
            .and_then(|s| s.strip_suffix("\"}"))
            .ok_or("its MAC is not its last field")?;
        let mut mac = [0u8; 32];
        hex::decode_to_slice(mac_hex, &mut mac).map_err(|_| "its MAC is not hex")?;
        let value: serde_json::Value =
            serde_json::from_str(&format!("{body}}}")).map_err(|_| "not a JSON object")?;
        let seq = value["seq"].as_u64().ok_or("it has no seq")?;
        let mut prev = self.mac;
        if value["event"] == "open" {
            let stated = value["prev"].as_str().ok_or("an open line without prev")?;
            let mut stated_mac = [0u8; 32];
            hex::decode_to_slice(stated, &mut stated_mac).map_err(|_| "prev is not hex")?;
            if !self.started {
                // The first file given: take the chain from where it says.
                prev = stated_mac;
                self.seq = seq.saturating_sub(1);
            } else if stated_mac != self.mac {
                return Err("it does not continue the chain of the file before".into());
            }
        } else if !self.started {
            return Err("a file starts with its open line".into());
        }
        if seq != self.seq + 1 {
            return Err(format!("seq {seq} where {} was due", self.seq + 1));
        }
        // Compared in constant time (hmac's verify): a forger learns
        // nothing from timing.
        if !self.key.verify(&prev, body.as_bytes(), &mac) {
            return Err("its MAC is wrong (changed, inserted, moved or forged)".into());
        }
        if self
            .anchor
            .is_some_and(|head| head.seq == seq && head.mac != mac)
        {
            return Err("it is not the line the head record names".into());
        }
        let event = value["event"].as_str();
        if event == Some("start") {
            if self.starts > 0 && !self.stopped {
                self.unclean += 1;
            }
            self.starts += 1;
        }
        self.anchored |= event == Some("start") || value["anchored"] == true;
        self.stopped = event == Some("stop");
        self.seq = seq;
        self.mac = mac;
        self.started = true;
        Ok(())
    }
}

/// What [`verify_audit`] found in a chain that verifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    /// Lines checked.
    pub lines: u64,
    /// Sequence numbers of the first and last lines.
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// The last line's MAC (hex): compare with a copy kept elsewhere to see
    /// that no line was cut from the end.
    pub last_mac: String,
    /// Whether the chain starts at the log's very first line (otherwise
    /// earlier files were not given).
    pub from_start: bool,
    /// Whether the last file ends in an incomplete line (only with
    /// [`VerifyOptions::allow_torn_tail`]; it is not checked).
    pub incomplete_tail: bool,
    /// The sequence number the head record names, when the live file and
    /// its head were checked (the chain reaches it).
    pub head_seq: Option<u64>,
    /// Server starts recorded in the files given.
    pub starts: u64,
    /// Starts that followed a run with no `stop` line (a crash, or a kill).
    pub unclean_starts: u64,
    /// Whether the last line is a clean stop (false while a server writes
    /// the log, or after a crash).
    pub stopped: bool,
}

/// How [`verify_audit`] checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accept a last line without its newline (a crash, or a line being
    /// written while the log is read) and check everything before it.
    /// Without it, such a tail fails: a forger could append anything there.
    pub allow_torn_tail: bool,
}

/// Whether `path` is a rotated file's name (`FILE.` + 20 digits).
fn is_rotated(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.len() == 20 && e.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks the audit files `files` (in any order: they are put in the order
/// of their first lines) as one chain under `key`. The head record beside
/// the live file (`FILE.head`) anchors the chain's end:
/// a log cut back before the line the head names fails.
///
/// # Errors
/// [`Error::Policy`] naming the file and line number of the first line
/// that breaks the chain, a cut end, a missing or forged head record, a
/// torn last line (unless allowed), or a file that cannot be read.
pub fn verify_audit(
    key: &AuditKey,
    files: &[PathBuf],
    options: VerifyOptions,
) -> Result<AuditReport> {
    // A head record given (as `audit.log*` does) is read beside its live
    // file.
    let files = files
        .iter()
        .filter(|f| f.extension().is_none_or(|e| e != "head"));
    let mut ordered = Vec::new();
    for file in files {
        let seq = first_seq(file)
            .map_err(|e| Error::policy(format!("{}: line 1: {e}", file.display())))?;
        ordered.push((seq, file));
    }
    ordered.sort();
    if ordered.is_empty() {
        return Err(Error::policy("no audit log file given"));
    }
    let mut chain = Chain::new(key);
    // The live file (the newest, not a rotated name) is anchored by its
    // head record. When only rotated files are given, the live file they
    // belong to is found by name: if its head is there, the files given
    // must still reach the line it names (a live file removed, or renamed
    // as rotated after a cut, does not pass for an archive).
    let newest = ordered.last().map(|(_, f)| *f);
    let live_given = newest.filter(|f| !is_rotated(f));
    let live: Option<PathBuf> = match (live_given, newest) {
        (Some(live), _) => Some(live.clone()),
        (None, Some(rotated)) => Some(rotated.with_extension("")),
        (None, None) => None,
    };
    let head_path = live.as_deref().map(Head::path);
    if let Some(live) = live.as_deref() {
        // A running server rewrites the head in place: a read that races
        // a rewrite is tried again before it counts as a bad head.
        let mut tries = 0;
        chain.anchor = loop {
            match Head::read(key, live) {
                Err(_) if tries < 3 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                read => break read.map_err(Error::policy)?,
            }
        };
    }
    let mut lines = 0;
    let mut first_seq = None;
    let mut from_start = false;
    let mut incomplete_tail = false;
    let last = ordered.last().map(|(_, f)| *f);
    for (_, file) in &ordered {
        let file = *file;
        let text = std::fs::read(file)
            .map_err(|e| Error::policy(format!("cannot read {}: {e}", file.display())))?;
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            if Some(file) != last {
                return Err(Error::policy(format!(
                    "{}: its last line is incomplete, and it is not the last file",
                    file.display()
                )));
            } else if !options.allow_torn_tail {
                return Err(Error::policy(format!(
                    "{}: line {}: incomplete (no newline): a crash, a line being written, or \
                     one appended by hand; it is not checked (--allow-torn-tail checks the \
                     lines before it)",
                    file.display(),
                    text[..complete].iter().filter(|&&b| b == b'\n').count() + 1
                )));
            }
            incomplete_tail = true;
        }
        let complete_lines = text[..complete.saturating_sub(1)].split(|&b| b == b'\n');
        for (i, line) in complete_lines.enumerate().take_while(|_| complete > 0) {
            let was_started = chain.started;
            chain.line(line).map_err(|reason| {
                Error::policy(format!("{}: line {}: {reason}", file.display(), i + 1))
            })?;
            if !was_started {
                first_seq = Some(chain.seq);
                from_start = chain.seq == 1;
            }
            lines += 1;
        }
    }
    if let (Some(head_path), Some(live)) = (&head_path, &live) {
        match chain.finish(head_path) {
            // Rotated files alone, with no head beside them: an archive.
            Err(_) if live_given.is_none() && chain.anchor.is_none() => {}
            Err(reason) if live_given.is_none() => {
                return Err(Error::policy(format!(
                    "{}: {reason} (the live file {} was not given)",
                    newest.map_or_else(String::new, |f| f.display().to_string()),
                    live.display()
                )))
            }
            Err(reason) => {
                return Err(Error::policy(format!("{}: {reason}", live.display())));
            }
            Ok(()) => {}
        }
    }
    Ok(AuditReport {
        lines,
        first_seq: first_seq.unwrap_or(0),
        last_seq: chain.seq,
        last_mac: hex::encode(chain.mac),
        from_start,
        incomplete_tail,
        head_seq: chain.anchor.map(|h| h.seq),
        starts: chain.starts,
        unclean_starts: chain.unclean,
        stopped: chain.stopped,
    })
}
