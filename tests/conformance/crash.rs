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

#[tokio::test]
async fn kill_9_loses_no_acknowledged_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeSet<KeyId> = BTreeSet::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print its own text before ours on a line.
                if line.ends_with("OPEN") {
                    let _ = tx.send(());
                } else if let Some(id) = line.split("ACK ").nth(1) {
                    ids.push(id.parse::<KeyId>().unwrap());
                }
            }
            ids
        });
        // Wait until the child holds the store, then kill it mid-stream.
        rx.recv_timeout(Duration::from_secs(60))
            .expect("child opened the store");
        tokio::time::sleep(Duration::from_millis(20 + random_ms(300))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let ids = reader.join().unwrap();
        acked.extend(ids.iter().copied());

        // Reopen (the dead child's lock is gone) and check everything.
        let store = FileStorage::open(&dir).await.unwrap();
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
    let store = FileStorage::open(&dir).await.unwrap();
    println!(
        "crash test: {ROUNDS} SIGKILLs, {} records acknowledged, {} recovered, {} stored in all",
        acked.len(),
        acked.len(),
        store.count()
    );
    assert!(acked.len() >= ROUNDS, "the child made progress");
}
