//! The fsync discipline of the file storage, shown on the system calls it
//! makes (strace): before `put` returns, the record's bytes are fsynced
//! under their temporary name, linked to the record's name, and the shard
//! directory is fsynced after the link. That is what survives a power loss
//! (the crash test's SIGKILL keeps the page cache, so it only shows that
//! nothing is torn). The checker is shown to have teeth: the same child with
//! `Durability::NoSync` fails it.

use std::collections::HashMap;
use std::process::Command;

use keyserver::backends::{Durability, FileStorage};
use keyserver::testing::storage::record;
use keyserver::KeyStorage;

const CHILD_DIR: &str = "KEYSERVER_FSYNC_CHILD_DIR";
const CHILD_NOSYNC: &str = "KEYSERVER_FSYNC_CHILD_NOSYNC";
const RECORDS: u32 = 20;

/// The traced child: puts records, printing `ACK <key id>` after each `put`
/// returns.
#[test]
#[ignore = "the fsync test's child process, started under strace by durability::acknowledged_records_were_fsynced"]
fn fsync_child() {
    let dir = std::env::var(CHILD_DIR).expect("started by the fsync test");
    let durability = if std::env::var_os(CHILD_NOSYNC).is_some() {
        Durability::NoSync
    } else {
        Durability::Fsync
    };
    keyserver::testing::run(async {
        let store = FileStorage::open_with(&dir, durability).await.unwrap();
        for n in 0..RECORDS {
            let rec = record(n);
            store.put(&rec).await.unwrap();
            println!("ACK {}", rec.key_id());
        }
    });
}

/// One completed system call: its text, call and result.
struct Call {
    text: String,
}

/// The completed calls of an `strace -f -y` log, in completion order
/// (an `<unfinished ...>` call completes at its `<... resumed>` line).
fn completed(log: &str) -> Vec<Call> {
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut calls = Vec::new();
    for line in log.lines() {
        // "PID  call": strace pads the pid column, so trim what follows it.
        let (pid, rest) = match line.split_once(' ') {
            Some((p, r)) if p.chars().all(|c| c.is_ascii_digit()) => {
                (p.to_string(), r.trim_start())
            }
            _ => (String::new(), line),
        };
        if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, head.to_string());
        } else if rest.starts_with("<... ") {
            let tail = rest.split_once(" resumed>").map_or("", |(_, t)| t);
            let head = pending.remove(&pid).unwrap_or_default();
            calls.push(Call {
                text: format!("{head}{tail}"),
            });
        } else {
            calls.push(Call {
                text: rest.to_string(),
            });
        }
    }
    calls
}

/// The violations of the discipline for each acknowledged key id.
fn violations(log: &str) -> Vec<String> {
    let calls = completed(log);
    let mut found = Vec::new();
    let mut acks = 0;
    for (ack_at, call) in calls.iter().enumerate() {
        let Some(id) = call
            .text
            .strip_prefix("write(1")
            .and_then(|t| t.split_once("\"ACK "))
            .map(|(_, t)| t.chars().take(64).collect::<String>())
        else {
            continue;
        };
        acks += 1;
        let name = format!("/{id}.rec\"");
        let Some(link_at) = calls[..ack_at].iter().rposition(|c| {
            c.text.starts_with("linkat(") && c.text.contains(&name) && c.text.ends_with("= 0")
        }) else {
            found.push(format!("{id}: acknowledged without a link to its name"));
            continue;
        };
        let link = &calls[link_at].text;
        // linkat(AT_FDCWD, "OLD", AT_FDCWD, "NEW", 0) = 0
        let quoted: Vec<&str> = link.split('"').collect();
        let (old, new) = (
            quoted.get(1).copied().unwrap_or(""),
            quoted.get(3).copied().unwrap_or(""),
        );
        let shard = new.rsplit_once('/').map_or("", |(d, _)| d);
        let fsynced = |path: &str, range: std::ops::Range<usize>| {
            calls[range].iter().any(|c| {
                c.text.starts_with("fsync(")
                    && c.text.contains(&format!("<{path}>"))
                    && c.text.ends_with("= 0")
            })
        };
        if !fsynced(old, 0..link_at) {
            found.push(format!("{id}: its bytes were not fsynced before the link"));
        }
        if !fsynced(shard, link_at..ack_at) {
            found.push(format!(
                "{id}: its directory was not fsynced after the link"
            ));
        }
    }
    assert_eq!(acks, RECORDS, "every put was acknowledged in the trace");
    found
}

fn traced_child(dir: &std::path::Path, nosync: bool) -> Option<String> {
    let log = dir.join("strace.log");
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-y",
        "-qq",
        "-s",
        "256",
        "-e",
        "trace=fsync,fdatasync,linkat,link,write",
        "-o",
    ])
    .arg(&log)
    .arg(std::env::current_exe().unwrap())
    .args([
        "--exact",
        "durability::fsync_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR, dir.join("store"));
    if nosync {
        cmd.env(CHILD_NOSYNC, "1");
    }
    match cmd.output() {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "the traced child failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("running 1 test") && stdout.contains("1 passed"),
                "{stdout}"
            );
            Some(std::fs::read_to_string(&log).unwrap())
        }
        Err(e) => {
            crate::common::unavailable("the fsync discipline test", format!("no strace: {e}"));
            None
        }
    }
}

#[test]
fn acknowledged_records_were_fsynced() {
    let synced = tempfile::tempdir().unwrap();
    let Some(log) = traced_child(synced.path(), false) else {
        return;
    };
    let found = violations(&log);
    assert!(found.is_empty(), "{found:#?}");

    // The checker has teeth: without fsync, every record breaks it.
    let unsynced = tempfile::tempdir().unwrap();
    let log = traced_child(unsynced.path(), true).unwrap();
    let found = violations(&log);
    assert_eq!(found.len(), 2 * RECORDS as usize, "{found:#?}");
}
