//! kill -9 at random moments loses no acknowledged record.
//!
//! The test re-runs this test binary as a child process that opens a
//! `FileStorage` and puts records in a loop, printing each key id after `put`
//! returns. The parent kills it with SIGKILL at a random moment, reopens the
//! store, and checks every acknowledged record.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyserver::backends::FileStorage;
use keyserver::{KeyId, KeyStorage, Strength, WrappedDek};

const CHILD_DIR: &str = "KEYSERVER_CRASH_CHILD_DIR";
const ROUNDS: usize = 12;

/// The child process of the crash test below, which starts it (ignored
/// otherwise: on its own it has nothing to do).
#[test]
#[ignore = "the crash test's child process, started by crash::kill_9_loses_no_acknowledged_record"]
fn crash_child() {
    let dir = std::env::var(CHILD_DIR).expect("started by the crash test");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let store = FileStorage::open(&dir).await.unwrap();
        println!("OPEN");
        let pid = std::process::id();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut i = 0u64;
        while Instant::now() < deadline {
            let id = KeyId::from_spki_der(format!("crash {pid} {i}").as_bytes());
            let rec =
                WrappedDek::new(id, 3072, Strength::S128, i, vec![(i % 256) as u8; 384]).unwrap();
            store.put(&rec).await.unwrap();
            println!("ACK {id}");
            i += 1;
        }
    });
}

/// A random delay in `0..range_ms` milliseconds from the OS clock's low bits.
fn random_ms(range_ms: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(nanos.wrapping_mul(2_654_435_761) >> 7) % range_ms
}

/// Starts this test binary as the child test `name` (an ignored test) with
/// `env_var` set to `dir`, and a thread collecting the text after "ACK " of
/// each line it prints; the receiver gets a message once it prints "OPEN".
fn start_child(
    name: &str,
    env_var: &str,
    dir: &std::path::Path,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<()>,
    std::thread::JoinHandle<Vec<String>>,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env_var, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may print its own text before ours on a line.
            if line.ends_with("OPEN") {
                let _ = tx.send(());
            } else if let Some(ack) = line.split("ACK ").nth(1) {
                acks.push(ack.to_string());
            }
        }
        acks
    });
    (child, rx, reader)
}

/// Opens the store the test itself closed a moment ago or whose child was
/// just killed. Another test of this binary that spawns a process at that
/// moment shares every open file of this one, the store's lock included,
/// between its fork and its exec: the lock may stay held that long.
async fn reopen(dir: &std::path::Path) -> FileStorage {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match FileStorage::open(dir).await {
            Ok(store) => return store,
            Err(e) if e.to_string().contains("in use") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reopening {}: {e}", dir.display()),
        }
    }
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut acked: BTreeSet<KeyId> = BTreeSet::new();
    for round in 0..ROUNDS {
        let (mut child, rx, reader) = start_child("crash::crash_child", CHILD_DIR, &dir);
        // Wait until the child holds the store, then kill it mid-stream.
        rx.recv_timeout(Duration::from_secs(60))
            .expect("child opened the store");
        tokio::time::sleep(Duration::from_millis(20 + random_ms(300))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let ids: Vec<KeyId> = reader
            .join()
            .unwrap()
            .iter()
            .map(|id| id.parse().unwrap())
            .collect();
        acked.extend(ids.iter().copied());

        // Reopen (the dead child's lock is gone) and check everything.
        let store = reopen(&dir).await;
        for id in &acked {
            let rec = store
                .get(id)
                .await
                .unwrap_or_else(|e| panic!("round {round}: acknowledged {id} lost: {e}"));
            assert_eq!(rec.key_id(), id);
        }
        let listed = store.list().await.unwrap();
        assert_eq!(
            store.count(),
            listed.len() as u64,
            "count matches the files"
        );
        for id in &listed {
            store.get(id).await.unwrap(); // no torn record
        }
        // At most one record per kill can be stored but not yet acknowledged.
        assert!(listed.len() >= acked.len());
        assert!(listed.len() <= acked.len() + round + 1);
        let leftovers: Vec<_> = crate::file::walk(&dir)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    let store = reopen(&dir).await;
    println!(
        "crash test: {ROUNDS} SIGKILLs, {} records acknowledged, {} recovered, {} stored in all",
        acked.len(),
        acked.len(),
        store.count()
    );
    assert!(acked.len() >= ROUNDS, "the child made progress");
}

#[cfg(feature = "cipher-rustcrypto")]
const LIFECYCLE_CHILD_DIR: &str = "KEYSERVER_LIFECYCLE_CRASH_DIR";
#[cfg(feature = "cipher-rustcrypto")]
const LIFECYCLE_ROUNDS: usize = 4;

/// The child of the lifecycle crash test: generate, rotate, suspend the new
/// key, destroy the old one, in a loop, printing each acknowledgement.
#[cfg(feature = "cipher-rustcrypto")]
#[test]
#[ignore = "the lifecycle crash test's child process, started by crash::kill_9_in_lifecycle_changes_leaves_old_or_new_states"]
fn lifecycle_crash_child() {
    use keyserver::api::CallerInfo;
    use keyserver::backends::RustCrypto;
    use keyserver::{Change, KeyServer, Target};
    let dir = std::env::var(LIFECYCLE_CHILD_DIR).expect("started by the crash test");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let keys = KeyServer::new(RustCrypto::new(), FileStorage::open(&dir).await.unwrap())
            .with_destroy_window(Duration::ZERO)
            .with_kek_pool(4, 1);
        println!("OPEN");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let old = keys.generate().await.unwrap();
            println!("ACK GEN {}", old.id());
            let new = keys
                .rotate_for(&old, None, &CallerInfo::default())
                .await
                .unwrap();
            println!("ACK ROT {} {}", old.id(), new.id());
            keys.change_state(Change::Suspend, &Target::Kek(new.clone()))
                .await
                .unwrap();
            println!("ACK SUS {}", new.id());
            keys.change_state(Change::Destroy, &Target::Kek(old.clone()))
                .await
                .unwrap();
            println!("ACK DES {}", old.id());
        }
    });
}

/// kill -9 while a server rotates, suspends and destroys keys in a loop:
/// after each kill every key reads back in its old or its new state (no
/// corrupt metadata, no half state), and every acknowledged change is
/// there.
#[cfg(feature = "cipher-rustcrypto")]
#[tokio::test]
async fn kill_9_in_lifecycle_changes_leaves_old_or_new_states() {
    use keyserver::backends::RustCrypto;
    use keyserver::{KeyServer, KeyState};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut acked: Vec<String> = Vec::new();
    for round in 0..LIFECYCLE_ROUNDS {
        let (mut child, rx, reader) =
            start_child("crash::lifecycle_crash_child", LIFECYCLE_CHILD_DIR, &dir);
        rx.recv_timeout(Duration::from_secs(60))
            .expect("child opened the store");
        tokio::time::sleep(Duration::from_millis(300 + random_ms(1500))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        acked.extend(reader.join().unwrap());

        let keys = KeyServer::new(RustCrypto::new(), FileStorage::open(&dir).await.unwrap());
        // Every key (record or metadata) reads back whole.
        for id in keys.storage().list_all().await.unwrap() {
            keys.describe(&id)
                .await
                .unwrap_or_else(|e| panic!("round {round}: key {id} unreadable: {e}"));
        }
        let state = |id: &str| {
            let id: KeyId = id.parse().unwrap();
            let keys = &keys;
            async move { keys.describe(&id).await.unwrap() }
        };
        for ack in &acked {
            let parts: Vec<&str> = ack.split(' ').collect();
            match parts[..] {
                ["GEN", id] => {
                    state(id).await;
                }
                ["ROT", old, new] => {
                    let old_info = state(old).await;
                    assert_eq!(
                        old_info.rotated_to,
                        Some(new.parse().unwrap()),
                        "round {round}: acknowledged rotation of {old} lost"
                    );
                    assert!(matches!(
                        old_info.state,
                        KeyState::Deactivated | KeyState::Destroyed
                    ));
                    assert_eq!(state(new).await.rotated_from, Some(old.parse().unwrap()));
                }
                ["SUS", id] => assert_eq!(state(id).await.state, KeyState::Suspended),
                ["DES", id] => {
                    assert_eq!(state(id).await.state, KeyState::Destroyed);
                    assert!(!keys.storage().contains(&id.parse().unwrap()).await.unwrap());
                }
                _ => panic!("unexpected line {ack:?}"),
            }
        }
    }
    println!(
        "lifecycle crash test: {LIFECYCLE_ROUNDS} SIGKILLs, {} acknowledged changes",
        acked.len()
    );
    assert!(acked.len() >= LIFECYCLE_ROUNDS, "the child made progress");
}
