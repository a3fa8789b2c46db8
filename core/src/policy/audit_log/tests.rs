//! The audit log's own tests.

use super::*;

fn key() -> AuditKey {
    AuditKey::new(vec![0x42; 32]).unwrap()
}

fn entry(method: &str) -> Entry {
    Entry {
        principal: "app".into(),
        peer: Some("127.0.0.1:4000".parse().unwrap()),
        protocol: "jsonrpc",
        method: method.into(),
        key_id: Some(KeyId::from_bytes([7; 32])),
        ..Entry::default()
    }
}

fn config(dir: &Path, rotate_bytes: u64) -> AuditConfig {
    AuditConfig {
        path: dir.join("audit.log"),
        key: key(),
        rotate_bytes,
    }
}

/// A log of `n` call lines (after its open line), closed.
fn log_of(dir: &Path, n: usize, rotate_bytes: u64) -> PathBuf {
    let config = config(dir, rotate_bytes);
    let path = config.path.clone();
    let log = AuditLog::open(config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..n {
            log.record(entry(if i % 2 == 0 { "generate" } else { "status" }), true)
                .await
                .unwrap();
        }
    });
    log.close();
    path
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn verify(paths: &[PathBuf]) -> std::result::Result<AuditReport, String> {
    verify_audit(&key(), paths, VerifyOptions::default()).map_err(|e| e.to_string())
}

fn verify_torn(paths: &[PathBuf]) -> std::result::Result<AuditReport, String> {
    let options = VerifyOptions {
        allow_torn_tail: true,
    };
    verify_audit(&key(), paths, options).map_err(|e| e.to_string())
}

/// The log files in `dir` (not the head record).
fn log_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|e| e != "head"))
        .collect()
}

#[test]
fn a_written_log_verifies_and_its_lines_hold_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 5, DEFAULT_AUDIT_ROTATE);
    let report = verify(std::slice::from_ref(&path)).unwrap();
    // open, start, 5 calls, stop.
    assert_eq!((report.lines, report.first_seq, report.last_seq), (8, 1, 8));
    assert!(report.from_start && !report.incomplete_tail);
    assert_eq!(report.head_seq, Some(8));
    assert_eq!((report.starts, report.unclean_starts), (1, 0));
    assert!(report.stopped);
    let all = lines(&path);
    assert!(all[0].contains(r#""event":"open""#) && all[0].contains(r#""anchored":true"#));
    assert!(all[1].contains(r#""event":"start""#), "{}", all[1]);
    assert!(all[7].contains(r#""event":"stop""#), "{}", all[7]);
    let second: serde_json::Value = serde_json::from_str(&all[2]).unwrap();
    assert_eq!(second["method"], "generate");
    assert_eq!(second["principal"], "app");
    assert_eq!(second["peer"], "127.0.0.1:4000");
    assert_eq!(second["key_id"], KeyId::from_bytes([7; 32]).to_string());
    assert_eq!(second["code"], 0);
    assert!(second["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn every_kind_of_tampering_is_caught_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 6, DEFAULT_AUDIT_ROTATE);
    let good = lines(&path);
    let check = |lines: Vec<String>, needle: &str| {
        write_lines(&path, &lines);
        let err = verify(std::slice::from_ref(&path)).unwrap_err();
        assert!(err.contains(needle), "{err} (wanted {needle})");
    };
    // One changed byte (the method of line 3).
    let mut changed = good.clone();
    changed[3] = changed[3].replacen("status", "statuz", 1);
    check(changed, "line 4: its MAC is wrong");
    // A deleted line.
    let mut deleted = good.clone();
    deleted.remove(3);
    check(deleted, "line 4: seq 5 where 4 was due");
    // A swapped pair.
    let mut swapped = good.clone();
    swapped.swap(2, 3);
    check(swapped, "line 3: seq 4 where 3 was due");
    // A swapped pair with their numbers swapped back: the MACs give it away.
    let mut renumbered = good.clone();
    renumbered.swap(2, 3);
    renumbered[2] = renumbered[2].replacen("\"seq\":4", "\"seq\":3", 1);
    renumbered[3] = renumbered[3].replacen("\"seq\":3", "\"seq\":4", 1);
    check(renumbered, "line 3: its MAC is wrong");
    // A line forged without the key: a well-formed line chained with
    // another key.
    let forger = AuditKey::new(vec![0x13; 32]).unwrap();
    let prev_mac: serde_json::Value = serde_json::from_str(&good[3]).unwrap();
    let mut prev = [0u8; 32];
    hex::decode_to_slice(prev_mac["mac"].as_str().unwrap(), &mut prev).unwrap();
    let body = r#"{"seq":5,"time":"2026-01-01T00:00:00.000000Z","principal":"admin","method":"generate","code":0"#;
    let forged = format!(
        "{body},\"mac\":\"{}\"}}",
        hex::encode(forger.mac(&prev, body.as_bytes()))
    );
    let mut inserted = good.clone();
    inserted[4] = forged;
    check(inserted, "line 5: its MAC is wrong");
    // An empty line, and a line that is not JSON.
    let mut empty = good.clone();
    empty.insert(2, String::new());
    check(empty, "line 3: too short");
    // The untouched log still verifies; the wrong key does not.
    write_lines(&path, &good);
    assert!(verify(std::slice::from_ref(&path)).is_ok());
    let wrong = AuditKey::new(vec![0x43; 32]).unwrap();
    assert!(verify_audit(
        &wrong,
        std::slice::from_ref(&path),
        VerifyOptions::default()
    )
    .is_err());
}

#[test]
fn a_crash_cut_line_is_reported_then_repaired_and_the_chain_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 3, DEFAULT_AUDIT_ROTATE);
    let mut text = std::fs::read(&path).unwrap();
    let torn = br#"{"seq":7,"time":"2026-"#;
    text.extend_from_slice(torn);
    std::fs::write(&path, &text).unwrap();
    // Unchecked bytes at the end fail, unless a torn tail is allowed.
    let err = verify(std::slice::from_ref(&path)).unwrap_err();
    assert!(err.contains("line 7: incomplete"), "{err}");
    let report = verify_torn(std::slice::from_ref(&path)).unwrap();
    assert!(report.incomplete_tail);
    assert_eq!(report.last_seq, 6);
    // Reopened (a restart): the cut line goes, the log says so, and
    // the chain continues.
    let again = log_of(dir.path(), 2, DEFAULT_AUDIT_ROTATE);
    let report = verify(&[again]).unwrap();
    // + repaired, start, 2 calls, stop.
    assert_eq!((report.lines, report.last_seq), (11, 11));
    assert!(!report.incomplete_tail);
    let repaired: serde_json::Value = serde_json::from_str(&lines(&path)[6]).unwrap();
    assert_eq!(repaired["event"], "repaired");
    assert_eq!(repaired["removed_bytes"], torn.len());
}

#[test]
fn a_log_that_does_not_verify_is_not_written_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 2, DEFAULT_AUDIT_ROTATE);
    let mut all = lines(&path);
    all[2] = all[2].replacen("app", "apq", 1);
    write_lines(&path, &all);
    let err = AuditLog::open(config(dir.path(), DEFAULT_AUDIT_ROTATE)).unwrap_err();
    assert_eq!(err.code(), 5);
    assert!(err.to_string().contains("line 3"), "{err}");
    assert_eq!(lines(&path), all, "untouched");
}

#[test]
fn rotated_files_continue_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 40, 2000);
    let mut files = log_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    // In any order.
    files.reverse();
    let report = verify(&files).unwrap();
    let opens = files.len() as u64;
    assert_eq!(report.lines, 40 + opens + 2);
    assert!(report.from_start);
    // A rotated file missing from the middle breaks the chain.
    files.sort_by_key(|f| first_seq(f).unwrap());
    let missing: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, f)| f.clone())
        .collect();
    let err = verify(&missing).unwrap_err();
    assert!(err.contains("seq") || err.contains("chain"), "{err}");
    // The live file alone verifies, from where its chain says it starts.
    let report = verify(&[path]).unwrap();
    assert!(!report.from_start);
}

#[test]
fn a_failed_write_refuses_until_the_file_can_be_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), DEFAULT_AUDIT_ROTATE);
    let path = config.path.clone();
    let mut writer = Writer::open(config).unwrap();
    let pending = |durable: bool| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            Pending {
                entry: entry("generate"),
                done: durable.then_some(tx),
                kept: durable,
            },
            rx,
        )
    };
    let (p, mut rx) = pending(true);
    writer.write_batch(vec![p]);
    assert!(rx.try_recv().unwrap().is_ok());
    // The file handle now refuses writes (as a full disk would).
    let writable = std::mem::replace(&mut writer.file, File::open(&path).unwrap());
    let (p, mut rx) = pending(true);
    writer.write_batch(vec![p]);
    assert_eq!(rx.try_recv().unwrap().unwrap_err().code(), 5);
    assert!(writer.failed.load(Ordering::Acquire));
    let (p, mut rx) = pending(true);
    writer.write_batch(vec![p]);
    assert!(rx.try_recv().unwrap().is_err(), "refused while failed");
    // A call's line that nobody waits for but that is kept (a generate
    // answered on its begun line) is kept too; a read-only one is not.
    let (mut kept, _) = pending(false);
    kept.kept = true;
    kept.entry.key_id = Some(KeyId::from_bytes([9; 32]));
    let (read_only, _) = pending(false);
    writer.write_batch(vec![kept, read_only]);
    // Writable again: the writer recovers and the chain holds.
    // A recovery attempt that cannot write its resume line fails.
    writer.recover();
    assert!(writer.failed.load(Ordering::Acquire));
    writer.file = writable;
    writer.recover();
    assert!(!writer.failed.load(Ordering::Acquire));
    let (p, mut rx) = pending(true);
    writer.write_batch(vec![p]);
    assert!(rx.try_recv().unwrap().is_ok());
    let report = verify(std::slice::from_ref(&path)).unwrap();
    // open, start, generate, resume, the three generates that could not
    // be written (late; the read-only line is not kept), generate: a call
    // that ran is never left out.
    assert_eq!(report.lines, 8);
    assert_eq!(report.head_seq, Some(8));
    let all = lines(&path);
    assert!(all[3].contains("\"event\":\"resume\""));
    for late in &all[4..7] {
        assert!(
            late.contains("\"method\":\"generate\"") && late.contains("\"late\":true"),
            "{late}"
        );
    }
    assert!(
        all[6].contains(&"09".repeat(32)),
        "the kept line: {}",
        all[6]
    );
    assert!(!all[7].contains("\"late\":true"));
}

#[test]
fn concurrent_durable_calls_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(config(dir.path(), DEFAULT_AUDIT_ROTATE)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..400)
            .map(|_| {
                let log = Arc::clone(&log);
                tokio::spawn(async move { log.record(entry("generate"), true).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    let syncs = log.stats().syncs.load(Ordering::Relaxed);
    assert_eq!(log.stats().lines.load(Ordering::Relaxed), 402);
    assert!(syncs < 400, "{syncs} syncs for 400 calls: no grouping");
    log.close();
}

/// Waits (bounded) until the log has written `n` lines.
fn wait_for_lines(log: &AuditLog, n: u64) {
    let start = Instant::now();
    while log.stats().lines.load(Ordering::Relaxed) < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} of {n} lines written after 10 s",
            log.stats().lines.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn lines_nobody_waits_for_are_written_without_waking_the_writer_for_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), DEFAULT_AUDIT_ROTATE);
    let path = config.path.clone();
    let log = AuditLog::open(config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // A burst of read-only lines (more than wake the writer at once), then,
    // once the log is idle, one alone: each reaches the file (open and
    // start lines first), within the linger, not at the next durable line.
    rt.block_on(async {
        for _ in 0..3000 {
            log.record(entry("get_wrapped"), false).await.unwrap();
        }
    });
    wait_for_lines(&log, 3002);
    std::thread::sleep(LINGER * 3);
    rt.block_on(async { log.record(entry("status"), false).await.unwrap() });
    wait_for_lines(&log, 3003);
    // A durable line after lingering ones is answered at once, and the
    // chain keeps the order in which lines were handed over.
    rt.block_on(async {
        log.record(entry("describe"), false).await.unwrap();
        log.record(entry("generate"), true).await.unwrap();
    });
    assert_eq!(log.stats().lines.load(Ordering::Relaxed), 3005);
    log.close();
    let all = lines(&path);
    assert!(
        all[3003].contains("\"method\":\"describe\""),
        "{}",
        all[3003]
    );
    assert!(
        all[3004].contains("\"method\":\"generate\""),
        "{}",
        all[3004]
    );
    let report = verify(&log_files(dir.path())).unwrap();
    assert!(report.from_start);
}

#[test]
fn a_lost_live_file_continues_from_the_newest_rotated_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 30, 2000);
    // A crash between the two steps of a rotation: the live file has
    // its rotated name and is gone under its own. The next start
    // continues the chain of the newest rotated file instead of
    // starting again at seq 1.
    let mut rotated = path.clone().into_os_string();
    rotated.push(format!(".{:020}", first_seq(&path).unwrap()));
    std::fs::rename(&path, &rotated).unwrap();
    log_of(dir.path(), 3, 2000);
    let report = verify(&log_files(dir.path())).unwrap();
    assert!(report.from_start, "one chain from seq 1");
    // The new file is private to the server's user.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

#[test]
fn a_log_cut_at_a_line_boundary_is_refused_by_verify_and_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 5, DEFAULT_AUDIT_ROTATE);
    let good = lines(&path);
    let open = || AuditLog::open(config(dir.path(), DEFAULT_AUDIT_ROTATE)).map(|_| ());
    for keep in [good.len() - 1, 3, 1] {
        write_lines(&path, &good[..keep]);
        let err = verify(std::slice::from_ref(&path)).unwrap_err();
        assert!(err.contains("lines were cut from its end"), "{keep}: {err}");
        let err = open().unwrap_err().to_string();
        assert!(err.contains("lines were cut from its end"), "{keep}: {err}");
        assert_eq!(
            lines(&path),
            good[..keep],
            "a refused log is not written to"
        );
    }
    // Emptied, or removed: the head still names seq 8.
    std::fs::write(&path, "").unwrap();
    assert!(open().unwrap_err().to_string().contains("cut"));
    std::fs::remove_file(&path).unwrap();
    assert!(open().unwrap_err().to_string().contains("cut"));
    // The whole log back, and its head removed, or forged.
    write_lines(&path, &good);
    let head = std::fs::read(Head::path(&path)).unwrap();
    std::fs::remove_file(Head::path(&path)).unwrap();
    let err = verify(std::slice::from_ref(&path)).unwrap_err();
    assert!(err.contains("missing"), "{err}");
    assert!(open().unwrap_err().to_string().contains("missing"));
    let forged = Head {
        seq: 3,
        mac: [0; 32],
    }
    .encode(&AuditKey::new(vec![0x13; 32]).unwrap());
    std::fs::write(Head::path(&path), forged).unwrap();
    let err = verify(std::slice::from_ref(&path)).unwrap_err();
    assert!(
        err.contains("head") && err.contains("does not verify"),
        "{err}"
    );
    // A genuine head of another log under the same key (one moved
    // aside earlier) names a line that is not this log's.
    let elsewhere = tempfile::tempdir().unwrap();
    let longer = log_of(elsewhere.path(), 6, DEFAULT_AUDIT_ROTATE);
    std::fs::write(Head::path(&longer), &head).unwrap();
    let err = verify(std::slice::from_ref(&longer)).unwrap_err();
    assert!(
        err.contains("line 8: it is not the line the head record names"),
        "{err}"
    );
    std::fs::write(Head::path(&path), &head).unwrap();
    let report = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!(report.head_seq, Some(8));
    open().unwrap();
}

#[test]
fn a_forged_tail_without_a_newline_fails_unless_allowed_and_is_recorded_when_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 2, DEFAULT_AUDIT_ROTATE);
    let mut text = std::fs::read(&path).unwrap();
    let forged = br#"{"seq":6,"time":"2026-01-01T00:00:00.000000Z","principal":"admin","method":"destroy","code":0,"mac":"00"}"#;
    text.extend_from_slice(forged);
    std::fs::write(&path, &text).unwrap();
    assert!(verify(std::slice::from_ref(&path))
        .unwrap_err()
        .contains("incomplete"));
    assert!(
        verify_torn(std::slice::from_ref(&path))
            .unwrap()
            .incomplete_tail
    );
    log_of(dir.path(), 0, DEFAULT_AUDIT_ROTATE);
    let all = lines(&path);
    assert!(!all.iter().any(|l| l.contains("admin")));
    let repaired: serde_json::Value = serde_json::from_str(&all[5]).unwrap();
    assert_eq!(repaired["event"], "repaired");
    assert_eq!(repaired["removed_bytes"], forged.len());
    verify(&[path]).unwrap();
}

#[test]
fn every_start_and_clean_stop_is_a_line_and_a_crash_shows() {
    let dir = tempfile::tempdir().unwrap();
    log_of(dir.path(), 1, DEFAULT_AUDIT_ROTATE);
    log_of(dir.path(), 1, DEFAULT_AUDIT_ROTATE);
    let path = dir.path().join("audit.log");
    let report = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!((report.starts, report.unclean_starts), (2, 0));
    assert!(report.stopped);
    // A run that ends without its stop line (kill -9): the writer is
    // dropped without running.
    drop(Writer::open(config(dir.path(), DEFAULT_AUDIT_ROTATE)).unwrap());
    let report = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!(report.starts, 3);
    assert!(!report.stopped);
    log_of(dir.path(), 1, DEFAULT_AUDIT_ROTATE);
    let report = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!((report.starts, report.unclean_starts), (4, 1));
    assert!(report.stopped);
}

/// A log written before head records (open line without `anchored`,
/// no start lines, no head file) still verifies and is continued.
#[test]
fn a_log_from_before_head_records_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let k = key();
    let mut mac = [0u8; 32];
    let mut text = String::new();
    for body in [
        format!(
            r#"{{"seq":1,"time":"2026-11-29T14:57:19.634353Z","event":"open","prev":"{}""#,
            hex::encode([0u8; 32])
        ),
        r#"{"seq":2,"time":"2026-11-29T14:57:21.374509Z","principal":"app","protocol":"xmlrpc","method":"generate","code":0,"latency_ms":2.5"#.to_string(),
    ] {
        mac = k.mac(&mac, body.as_bytes());
        text.push_str(&format!("{body},\"mac\":\"{}\"}}\n", hex::encode(mac)));
    }
    std::fs::write(&path, &text).unwrap();
    let report = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!((report.lines, report.head_seq), (2, None));
    log_of(dir.path(), 1, DEFAULT_AUDIT_ROTATE);
    let report = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!((report.lines, report.head_seq), (5, Some(5)));
}

/// `verify` is not fooled by a live file left out: removed, renamed as
/// a rotated file after a cut, or no log file at all (only its head).
#[test]
fn verify_needs_the_live_file_its_head_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 40, 2000);
    let rotated: Vec<PathBuf> = log_files(dir.path())
        .into_iter()
        .filter(|f| *f != path)
        .collect();
    assert!(!rotated.is_empty());
    let err = verify(&rotated).unwrap_err();
    assert!(err.contains("was not given"), "{err}");
    // Without its head (an archive copied elsewhere), they verify.
    let archive = tempfile::tempdir().unwrap();
    let copies: Vec<PathBuf> = rotated
        .iter()
        .map(|f| {
            let copy = archive.path().join(f.file_name().unwrap());
            std::fs::copy(f, &copy).unwrap();
            copy
        })
        .collect();
    assert!(verify(&copies).is_ok());
    // The live file cut and renamed as if rotated.
    let mut all = lines(&path);
    all.truncate(all.len() - 2);
    let first = first_seq(&path).unwrap();
    let mut renamed = path.clone().into_os_string();
    renamed.push(format!(".{first:020}"));
    write_lines(Path::new(&renamed), &all);
    std::fs::remove_file(&path).unwrap();
    let mut files = rotated.clone();
    files.push(PathBuf::from(&renamed));
    let err = verify(&files).unwrap_err();
    assert!(err.contains("cut from its end"), "{err}");
    // Nothing but the head.
    let err = verify(&[Head::path(&path)]).unwrap_err();
    assert!(err.contains("no audit log file"), "{err}");
}

/// A crash between link and unlink of a rotation leaves one file under
/// both names: the next start finishes the rotation.
#[test]
fn a_rotation_cut_between_link_and_unlink_is_finished_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_of(dir.path(), 3, DEFAULT_AUDIT_ROTATE);
    let mut rotated = path.clone().into_os_string();
    rotated.push(format!(".{:020}", first_seq(&path).unwrap()));
    std::fs::hard_link(&path, &rotated).unwrap();
    log_of(dir.path(), 2, DEFAULT_AUDIT_ROTATE);
    let report = verify(&log_files(dir.path())).unwrap();
    assert!(report.from_start);
    assert_eq!(report.head_seq, Some(report.last_seq));
    assert!(lines(&path)[0].contains(r#""event":"open""#));
}

#[test]
fn the_key_is_never_shown() {
    assert_eq!(format!("{:?}", key()), "AuditKey([REDACTED])");
}
