//! PostgreSQL end to end: several `keyserver serve` processes on one
//! database, a server killed under load, the database crashed and
//! restarted under load, copies and backups between file storage and
//! PostgreSQL, migrations. Each test has a database of its own on the
//! cluster `KEYSERVER_TEST_POSTGRES` names; the restart test runs a
//! cluster of its own (`scripts/pg-cluster`), so stopping it disturbs no
//! other test.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyserver::backends::PostgresStorage;
use keyserver::transports::{Failover, JsonRpc};
use keyserver::{Change, Error, Kek, KeyService, KeyState, KeyStorage, Target, Transport};

use crate::common::{postgres_db, spawn_server, unavailable};

const BIN: &str = env!("CARGO_BIN_EXE_keyserver");

/// How long a change made through one server may go unseen by another
/// (docs/OPERATIONS.md): the record cache's TTL, the bound when a
/// notification is lost with its connection.
const BOUND: Duration = Duration::from_secs(15);

/// A `keyserver serve` process on a loopback port.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(storage: &str, extra: &[&str]) -> Self {
        let (child, url) = spawn_server(
            Command::new(BIN)
                .args(["serve", "--listen", "127.0.0.1:0", "--storage", storage])
                .args(extra)
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null()),
        );
        Server { child, url }
    }

    fn client(&self) -> JsonRpc {
        JsonRpc::new(&self.url).unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One client over every server.
fn failover(servers: &[&Server]) -> Failover<JsonRpc> {
    Failover::new(servers.iter().map(|s| s.client()).collect()).unwrap()
}

/// Polls `check` every 5 ms until it holds or `limit` passes; how long it
/// took, or `None`.
pub(crate) async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn is_key_state(result: &keyserver::Result<keyserver::Dek>) -> bool {
    matches!(result, Err(Error::KeyState { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
async fn three_servers_share_one_database() {
    let Some(db) = postgres_db("three servers on one database").await else {
        return;
    };
    let servers: Vec<Server> = (0..3)
        .map(|_| Server::start(&db, &["--destroy-window", "0s"]))
        .collect();
    let (a, b, c) = (
        servers[0].client(),
        servers[1].client(),
        servers[2].client(),
    );

    // Made through one, read through the others.
    let kek = a.generate(None).await.unwrap();
    let dek = b.get_key(&kek).await.unwrap();
    assert_eq!(c.get_key(&kek).await.unwrap().as_bytes(), dek.as_bytes());
    let wrapped = c.get_wrapped(&kek.id()).await.unwrap();
    assert_eq!(wrapped.key_id(), &kek.id());
    // b and c now hold the key in their record caches.

    // Suspended through a: b and c refuse it within the bound.
    a.change(Change::Suspend, &Target::Kek(kek.clone()))
        .await
        .unwrap();
    for (name, other) in [("b", &b), ("c", &c)] {
        let took = within(BOUND, || async { is_key_state(&other.get_key(&kek).await) })
            .await
            .unwrap_or_else(|| panic!("{name} still hands out a suspended key after {BOUND:?}"));
        eprintln!("suspension seen by {name} after {took:?}");
    }
    // Resumed through b: a and c hand it out again.
    b.change(Change::Resume, &Target::Kek(kek.clone()))
        .await
        .unwrap();
    for other in [&a, &c] {
        within(BOUND, || async { other.get_key(&kek).await.is_ok() })
            .await
            .expect("resumption seen within the bound");
    }
    // Destroyed through c (window 0s: at once): a and b see it destroyed,
    // and the record is gone from the database.
    c.change(Change::Destroy, &Target::Kek(kek.clone()))
        .await
        .unwrap();
    for (name, other) in [("a", &a), ("b", &b)] {
        let took = within(BOUND, || async {
            other
                .describe(&kek.id())
                .await
                .is_ok_and(|i| i.state == KeyState::Destroyed)
                && other.get_wrapped(&kek.id()).await.is_err()
        })
        .await
        .unwrap_or_else(|| panic!("{name} does not see the destruction after {BOUND:?}"));
        eprintln!("destruction seen by {name} after {took:?}");
    }
    let store = PostgresStorage::connect(&db).await.unwrap();
    assert!(
        !store.contains(&kek.id()).await.unwrap(),
        "the record is gone"
    );
    assert_eq!(
        store.get_meta(&kek.id()).await.unwrap().unwrap().state,
        KeyState::Destroyed
    );

    // A client that knows all three: keys made through any are read
    // through any.
    let all = failover(&servers.iter().collect::<Vec<_>>());
    let keks: Vec<Kek> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(all.generate(None).await.unwrap());
        }
        v
    };
    for kek in &keks {
        for s in [&a, &b, &c] {
            s.get_key(kek).await.unwrap();
        }
    }
}

/// Two servers race a suspension against a destruction of the same key:
/// the per-key advisory lock makes the outcome one of the two serial
/// orders. Without it both could read "active" and one change would
/// overwrite the other: a suspension silently undone by cancelling the
/// destruction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
async fn racing_changes_through_two_servers_are_serialised() {
    let Some(db) = postgres_db("racing lifecycle changes").await else {
        return;
    };
    let (s1, s2) = (
        Server::start(&db, &["--destroy-window", "1h"]),
        Server::start(&db, &["--destroy-window", "1h"]),
    );
    let (a, b) = (Arc::new(s1.client()), Arc::new(s2.client()));
    let mut both = 0;
    for _ in 0..16 {
        let kek = a.generate(None).await.unwrap();
        let target = Target::Kek(kek.clone());
        let (ta, tb) = (target.clone(), target.clone());
        let (a2, b2) = (Arc::clone(&a), Arc::clone(&b));
        let suspend = tokio::spawn(async move { a2.change(Change::Suspend, &ta).await });
        let destroy = tokio::spawn(async move { b2.change(Change::Destroy, &tb).await });
        let (suspended, destroyed) = (suspend.await.unwrap(), destroy.await.unwrap());
        assert!(destroyed.is_ok(), "destroy is allowed from either state");
        let after = a
            .change(Change::CancelDestroy, &target)
            .await
            .expect("the destruction is pending, whoever won");
        if suspended.is_ok() {
            // Serial order: suspend, then destroy (of a suspended key).
            both += 1;
            assert_eq!(after.state, KeyState::Suspended, "the suspension survives");
        } else {
            // Serial order: destroy, then suspend (refused).
            assert!(
                matches!(suspended, Err(Error::KeyState { .. })),
                "{suspended:?}"
            );
            assert_eq!(after.state, KeyState::Active);
        }
    }
    eprintln!("{both} of 16 races had both changes succeed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
async fn a_server_killed_under_load_loses_no_idempotent_operation() {
    let Some(db) = postgres_db("a server killed under load").await else {
        return;
    };
    let mut servers: Vec<Server> = (0..3).map(|_| Server::start(&db, &[])).collect();
    let all = Arc::new(failover(&servers.iter().collect::<Vec<_>>()));
    let mut keks = Vec::new();
    for _ in 0..8 {
        keks.push(all.generate(None).await.unwrap());
    }
    let keks = Arc::new(keks);
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let mut tasks = Vec::new();
    for t in 0..4usize {
        // Each task a client of its own, as separate machines would be.
        let client = failover(&servers.iter().collect::<Vec<_>>());
        let (keks, stop, done, failed) = (
            Arc::clone(&keks),
            Arc::clone(&stop),
            Arc::clone(&done),
            Arc::clone(&failed),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                let kek = &keks[i % keks.len()];
                let result = match i % 4 {
                    0 => client.get_key(kek).await.map(drop),
                    1 => client.get_wrapped(&kek.id()).await.map(drop),
                    2 => client.describe(&kek.id()).await.map(drop),
                    _ => client.contains(&kek.id()).await.map(drop),
                };
                match result {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failed.lock().unwrap().push(e.to_string()),
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = done.load(Ordering::Relaxed);
    servers[1].kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let after = done.load(Ordering::Relaxed);
    eprintln!("{before} calls before the kill, {} after", after - before);
    assert!(
        failed.lock().unwrap().is_empty(),
        "calls failed: {:?}",
        failed.lock().unwrap()
    );
    assert!(after > before, "calls went on after the kill");
    // Changes still go through the two left.
    all.generate(None).await.unwrap();
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `scripts/pg-cluster ARGS`, and whether it succeeded.
fn pg_cluster(args: &[&str]) -> bool {
    Command::new(crate::common::root().join("scripts/pg-cluster"))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A cluster of this test's own, stopped when dropped.
struct OwnCluster {
    dir: tempfile::TempDir,
}

impl OwnCluster {
    /// A new cluster in a temporary directory on a free port.
    fn start() -> (Self, String) {
        let cluster = OwnCluster {
            dir: tempfile::Builder::new()
                .prefix("keyserver-pg-")
                .tempdir_in("/tmp")
                .unwrap(),
        };
        let port = free_port().to_string();
        assert!(
            pg_cluster(&["start", cluster.path(), &port]),
            "a cluster starts"
        );
        (cluster, port)
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = pg_cluster(&["stop", self.dir.path().to_str().unwrap()]);
    }
}

async fn readyz(url: &str) -> u16 {
    match crate::common::raw_http(false)
        .get(format!("{url}/readyz"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
async fn the_database_crashed_and_restarted_under_load_loses_nothing() {
    if std::env::var_os("KEYSERVER_TEST_POSTGRES").is_none() {
        unavailable(
            "the database restarted under load",
            "KEYSERVER_TEST_POSTGRES is not set (a PostgreSQL cluster can be made here)",
        );
        return;
    }
    let (cluster, port) = OwnCluster::start();
    let db = format!("postgres://keyserver@127.0.0.1:{port}/keyserver");
    let server = Server::start(&db, &["--request-timeout", "10"]);
    let client = Arc::new(server.client());

    // Generates in a loop; every acknowledged key is written down.
    let acked = Arc::new(Mutex::new(Vec::<Kek>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<(i32, Duration)>::new()));
    let load = {
        let (client, acked, stop, failures) = (
            Arc::clone(&client),
            Arc::clone(&acked),
            Arc::clone(&stop),
            Arc::clone(&failures),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match client.generate(None).await {
                    Ok(kek) => acked.lock().unwrap().push(kek),
                    Err(e) => {
                        failures.lock().unwrap().push((e.code(), started.elapsed()));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        })
    };
    let made = within(Duration::from_secs(60), || async {
        acked.lock().unwrap().len() >= 2
    })
    .await;
    assert!(made.is_some(), "keys were made before the crash");
    let before_crash = acked.lock().unwrap().len();
    // Crash: stop -m immediate (no shutdown checkpoint; recovery replays
    // the WAL at the next start).
    assert!(
        pg_cluster(&["crash", cluster.path()]),
        "the database crashes"
    );
    // While it is down: calls fail with code 5 well within the request
    // limit, and /readyz says 503.
    let down = within(Duration::from_secs(10), || async {
        readyz(&server.url).await == 503
    })
    .await;
    assert!(
        down.is_some(),
        "/readyz answers 503 while the database is down"
    );
    let started = Instant::now();
    let err = client.generate(None).await.unwrap_err();
    // 12 once the server knows the database is away (nothing was done).
    assert!(err.code() == 5 || err.code() == 12, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed fast: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Back: the server recovers by itself.
    assert!(pg_cluster(&["start", cluster.path()]), "cluster restarts");
    let back = within(Duration::from_secs(30), || async {
        readyz(&server.url).await == 200
    })
    .await;
    assert!(
        back.is_some(),
        "/readyz answers 200 once the database is back"
    );
    let again = acked.lock().unwrap().len();
    let made = within(Duration::from_secs(60), || async {
        acked.lock().unwrap().len() > again
    })
    .await;
    assert!(made.is_some(), "keys are made after the restart");
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    let failures = failures.lock().unwrap().clone();
    eprintln!(
        "{} keys acknowledged ({before_crash} before the crash), {} calls failed",
        acked.len(),
        failures.len()
    );
    assert!(
        acked.len() > before_crash,
        "keys were made after the restart"
    );
    for (code, took) in &failures {
        assert!(
            *code == 5 || *code == 11 || *code == 12,
            "a failed call has code {code} (storage, transport, or nothing done)"
        );
        assert!(*took < Duration::from_secs(10), "a call hung for {took:?}");
    }
    // Every acknowledged key is there, through a fresh connection.
    let store = PostgresStorage::connect(&db).await.unwrap();
    for kek in &acked {
        assert!(
            store.contains(&kek.id()).await.unwrap(),
            "key {} lost",
            kek.id()
        );
        client.get_key(kek).await.unwrap();
    }
}

fn keyserver(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The keys of a store as a server sees them: the first hands out its DEK,
/// the second is suspended, the third destroyed.
async fn check_keys(server: &Server, keks: &[Kek], deks: &[Vec<u8>]) {
    let client = server.client();
    assert_eq!(
        client.get_key(&keks[0]).await.unwrap().as_bytes(),
        &deks[0][..]
    );
    assert!(is_key_state(&client.get_key(&keks[1]).await));
    assert_eq!(
        client.describe(&keks[1].id()).await.unwrap().state,
        KeyState::Suspended
    );
    assert_eq!(
        client.describe(&keks[2].id()).await.unwrap().state,
        KeyState::Destroyed
    );
    assert!(client.get_wrapped(&keks[2].id()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
async fn copy_and_backup_round_trips_between_file_storage_and_postgres() {
    let Some(db) = postgres_db("copy and backup round trips").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file_store = format!("file:{}", dir.path().join("a").display());
    let (keks, deks) = {
        let server = Server::start(&file_store, &["--destroy-window", "0s"]);
        let client = server.client();
        let mut keks = Vec::new();
        for _ in 0..3 {
            keks.push(client.generate(None).await.unwrap());
        }
        let mut deks = Vec::new();
        for kek in &keks {
            deks.push(client.get_key(kek).await.unwrap().as_bytes().to_vec());
        }
        client
            .change(Change::Suspend, &Target::Kek(keks[1].clone()))
            .await
            .unwrap();
        client
            .change(Change::Destroy, &Target::Kek(keks[2].clone()))
            .await
            .unwrap();
        (keks, deks)
        // The server stops here: the file store's lock is free.
    };

    // File -> PostgreSQL, twice: the second copies nothing.
    let first = keyserver(&["copy", "--from", &file_store, "--to", &db]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(text.contains("3 keys: 2 records copied"), "{text}");
    let second = keyserver(&["copy", "--from", &file_store, "--to", &db]);
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(text.contains("0 records copied, 2 already there"), "{text}");
    {
        let server = Server::start(&db, &[]);
        check_keys(&server, &keks, &deks).await;
    }

    // PostgreSQL -> backup -> a new file store.
    let backup = dir.path().join("keys.backup");
    let out = keyserver(&[
        "backup",
        "--storage",
        &db,
        "--out",
        backup.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&backup).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let again = keyserver(&[
        "backup",
        "--storage",
        &db,
        "--out",
        backup.to_str().unwrap(),
    ]);
    assert!(!again.status.success(), "a backup never overwrites a file");

    // A damaged copy is refused, naming what is wrong, and writes nothing.
    let damaged = dir.path().join("damaged.backup");
    let mut bytes = std::fs::read(&backup).unwrap();
    let at = bytes.iter().position(|b| *b == b'\n').unwrap() + 40;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&damaged, &bytes).unwrap();
    let c_store = format!("file:{}", dir.path().join("c").display());
    let refused = keyserver(&[
        "restore",
        "--in",
        damaged.to_str().unwrap(),
        "--storage",
        &c_store,
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("damaged: line 2"), "{why}");
    assert!(
        !Path::new(&dir.path().join("c")).exists(),
        "nothing written"
    );
    std::fs::write(&damaged, &bytes[..bytes.len() - 10]).unwrap();
    let refused = keyserver(&[
        "restore",
        "--in",
        damaged.to_str().unwrap(),
        "--storage",
        &c_store,
    ]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("damaged"));

    let b_store = format!("file:{}", dir.path().join("b").display());
    for _ in 0..2 {
        let out = keyserver(&[
            "restore",
            "--in",
            backup.to_str().unwrap(),
            "--storage",
            &b_store,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let server = Server::start(&b_store, &[]);
    check_keys(&server, &keks, &deks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
async fn migrations_race_safely_and_a_newer_schema_is_refused() {
    let Some(db) = postgres_db("schema migrations").await else {
        return;
    };
    // Eight servers starting at once on an empty database: each version is
    // applied once and every one starts.
    let connects: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { PostgresStorage::connect(&db).await })
        })
        .collect();
    for c in connects {
        let store = c.await.unwrap().unwrap();
        assert_eq!(
            store.schema_version().await.unwrap(),
            keyserver::backends::SCHEMA_VERSION
        );
    }
    // Records are create-only in the database itself.
    let (client, connection) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let store = PostgresStorage::connect(&db).await.unwrap();
    let rec = keyserver::testing::storage::record(1);
    store.put(&rec).await.unwrap();
    let err = client
        .execute("UPDATE keyserver_records SET record = '\\x00'", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("create-only") || format!("{err:?}").contains("create-only"));
    assert_eq!(store.get(rec.key_id()).await.unwrap(), rec);
    // A damaged record is reported as such, naming the key.
    client
        .execute(
            "INSERT INTO keyserver_records (key_id, record) VALUES ($1, $2)",
            &[&vec![9u8; 32], &vec![1u8; 100]],
        )
        .await
        .unwrap();
    let id = keyserver::KeyId::from_bytes([9; 32]);
    assert!(
        matches!(store.get(&id).await, Err(Error::CorruptRecord { key_id, .. }) if key_id == id)
    );

    // A schema from a later keyserver: refused at start, with the reason.
    client
        .execute("UPDATE keyserver_schema SET version = 99", &[])
        .await
        .unwrap();
    let err = PostgresStorage::connect(&db).await.unwrap_err();
    assert!(err.to_string().contains("version 99"), "{err}");
    let out = keyserver(&["serve", "--listen", "127.0.0.1:0", "--storage", &db]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("newer than this keyserver"));
    // The URL's password is never printed.
    let with_password = db.replacen("keyserver@", "keyserver:hunter2@", 1);
    let out = keyserver(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--storage",
        &with_password,
    ]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
}

#[test]
fn unreachable_database_fails_fast_with_a_storage_error() {
    // Nothing listens on this port: refused at once, code 5, no hang.
    let port = free_port();
    let url = format!("postgres://keyserver@127.0.0.1:{port}/keyserver");
    let started = Instant::now();
    let err = keyserver::testing::run(PostgresStorage::connect(&url)).unwrap_err();
    assert_eq!(err.code(), 5, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Not a URL of ours: refused without echoing it.
    let err = keyserver::testing::run(PostgresStorage::connect("mysql://u:pw@h/d")).unwrap_err();
    assert!(!err.to_string().contains("pw"));
}

/// The Transport trait object works with a failover of boxed transports
/// too (what the CLI builds).
#[test]
fn failover_takes_boxed_transports() {
    let a: Box<dyn Transport> = Box::new(JsonRpc::new("http://127.0.0.1:1").unwrap());
    let b: Box<dyn Transport> = Box::new(JsonRpc::new("http://127.0.0.1:2").unwrap());
    let f = Failover::new(vec![a, b]).unwrap();
    assert_eq!(f.endpoint(), "http://127.0.0.1:1,http://127.0.0.1:2");
}

/// TLS to the database: a cluster that refuses every connection without
/// TLS. With `sslmode=require` and the CA named by `sslrootcert` the
/// storage connects (so it speaks TLS); without the CA the database's
/// certificate is refused; without TLS the database refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
async fn tls_to_the_database_is_verified() {
    if std::env::var_os("KEYSERVER_TEST_POSTGRES").is_none() {
        unavailable("TLS to the database", "KEYSERVER_TEST_POSTGRES is not set");
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    if crate::common::make_pki(pki.path()).is_none() {
        unavailable("TLS to the database", "the openssl command is missing");
        return;
    }
    let (cluster, port) = OwnCluster::start();
    // The server's certificate and key in the data directory, TLS on, and
    // only TLS connections admitted.
    let data = cluster.dir.path().join("data");
    for f in ["server.pem", "server.key"] {
        std::fs::copy(pki.path().join(f), data.join(f)).unwrap();
    }
    let conf = "\nssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n";
    let mut pg_conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
    pg_conf.push_str(conf);
    std::fs::write(data.join("postgresql.conf"), pg_conf).unwrap();
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostnossl all all 0.0.0.0/0 reject\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    let owned = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "chmod 600 {d}/server.key && if [ $(id -u) = 0 ]; then chown postgres: {d}/server.pem {d}/server.key {d}/postgresql.conf {d}/pg_hba.conf; fi",
            d = data.display()
        ))
        .status()
        .unwrap();
    assert!(owned.success());
    assert!(
        pg_cluster(&["restart", cluster.path()]),
        "restarts with TLS"
    );

    let base = format!("postgres://keyserver@127.0.0.1:{port}/keyserver");
    let ca = pki.path().join("ca.pem");
    let url = format!("{base}?sslmode=require&sslrootcert={}", ca.display());
    let store = PostgresStorage::connect(&url).await.unwrap();
    let rec = keyserver::testing::storage::record(3);
    store.put(&rec).await.unwrap();
    assert_eq!(store.get(rec.key_id()).await.unwrap(), rec);
    // verify-full is libpq's name for what require does here.
    let full = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());
    PostgresStorage::connect(&full).await.unwrap();

    // No CA that vouches for the certificate: refused, code 5.
    let err = PostgresStorage::connect(&format!("{base}?sslmode=require"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 5, "{err}");
    // No TLS: the database refuses.
    let err = PostgresStorage::connect(&format!("{base}?sslmode=disable"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 5, "{err}");
    // The server process: the same URL, and the CA from PGSSLROOTCERT.
    let server = {
        let (child, url) = spawn_server(
            Command::new(BIN)
                .args(["serve", "--listen", "127.0.0.1:0", "--storage"])
                .arg(format!("{base}?sslmode=require"))
                .env("PGSSLROOTCERT", &ca)
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null()),
        );
        Server { child, url }
    };
    assert!(server.client().contains(rec.key_id()).await.unwrap());
}

/// A lock request given up (timed out, or its future dropped) is never
/// granted to a session nobody unlocks: once the holder lets go, another
/// server gets the lock at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
async fn an_abandoned_key_lock_request_leaves_no_lock_behind() {
    let Some(db) = postgres_db("abandoned key lock requests").await else {
        return;
    };
    let mut quick = keyserver::backends::PostgresOptions::default();
    quick.timeout = Duration::from_millis(300);
    let holder = PostgresStorage::connect(&db).await.unwrap();
    let waiter = PostgresStorage::connect_with(&db, quick.clone())
        .await
        .unwrap();
    let other = PostgresStorage::connect_with(&db, quick).await.unwrap();
    let id = keyserver::KeyId::from_bytes([0x42; 32]);

    let held = holder.lock_key(&id).await.unwrap();
    // Timed out inside lock_key.
    let err = waiter.lock_key(&id).await.unwrap_err();
    assert_eq!(err.code(), 5, "{err}");
    // Dropped from outside while waiting.
    let dropped = tokio::time::timeout(Duration::from_millis(100), waiter.lock_key(&id)).await;
    assert!(dropped.is_err(), "still waiting when dropped");
    drop(held);
    // The holder's unlock runs on its session in the background: allow it
    // a moment, then the lock is free for anyone, again and again.
    let took = within(Duration::from_secs(5), || async {
        other.lock_key(&id).await.is_ok()
    })
    .await
    .expect("the lock is free once its holder lets go");
    eprintln!("lock free {took:?} after its holder let go");
    for _ in 0..3 {
        drop(
            waiter
                .lock_key(&id)
                .await
                .expect("the waiter's pool holds no stale lock"),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(other.lock_key(&id).await.expect("free again"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one value `query` gives on the cluster at 127.0.0.1:`port`.
async fn sql_one(port: &str, query: &str) -> String {
    let (client, connection) = tokio_postgres::connect(
        &format!("postgres://keyserver@127.0.0.1:{port}/keyserver"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let task = tokio::spawn(connection);
    let value: Option<String> = client.query_one(query, &[]).await.unwrap().get(0);
    drop(client);
    let _ = task.await;
    value.unwrap_or_default()
}

impl OwnCluster {
    /// A synchronous standby of `primary` (a base backup, streaming), on a
    /// free port.
    fn standby_of(primary: &OwnCluster) -> (Self, String) {
        let cluster = OwnCluster {
            dir: tempfile::Builder::new()
                .prefix("keyserver-pg-standby-")
                .tempdir_in("/tmp")
                .unwrap(),
        };
        let port = free_port().to_string();
        assert!(
            pg_cluster(&["standby", cluster.path(), &port, primary.path()]),
            "a synchronous standby starts"
        );
        (cluster, port)
    }
}

/// High availability: a primary with a synchronous standby, three servers
/// on a multi-host URL (`target_session_attrs=read-write`), and a
/// `generate` storm from four clients through them. The primary is killed
/// (`pg_ctl -m immediate`) in the middle of it and, a second later, the
/// standby promoted: every key a client was given reads afterwards (a
/// commit was acknowledged only once the standby had it on disk); while
/// no primary exists, calls fail with code 5 fast and `/readyz` answers
/// 503; the servers serve again on their own; and a state change through
/// one server is seen through the others (LISTEN moved to the new
/// primary, or the caches keep nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
async fn failover_to_the_synchronous_standby_loses_no_acknowledged_key() {
    if std::env::var_os("KEYSERVER_TEST_POSTGRES").is_none() {
        unavailable(
            "failover to a standby",
            "KEYSERVER_TEST_POSTGRES is not set (PostgreSQL clusters can be made here)",
        );
        return;
    }
    let (primary, pport) = OwnCluster::start();
    let (standby, sport) = OwnCluster::standby_of(&primary);
    let url = format!(
        "postgres://keyserver@127.0.0.1:{pport},127.0.0.1:{sport}/keyserver\
         ?target_session_attrs=read-write"
    );
    let servers: Vec<Server> = (0..3)
        .map(|_| {
            Server::start(
                &url,
                &[
                    "--kek-alg",
                    "ec",
                    "--kek-pool",
                    "0",
                    "--request-timeout",
                    "10",
                ],
            )
        })
        .collect();
    let acked = Arc::new(Mutex::new(Vec::<Kek>::new()));
    let acked_at = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let failed = Arc::new(Mutex::new(Vec::<(i32, Duration, Instant)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut storm = Vec::new();
    for _ in 0..4 {
        let client = failover(&servers.iter().collect::<Vec<_>>());
        let (acked, acked_at, failed, stop) = (
            Arc::clone(&acked),
            Arc::clone(&acked_at),
            Arc::clone(&failed),
            Arc::clone(&stop),
        );
        storm.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match client.generate(None).await {
                    Ok(kek) => {
                        acked.lock().unwrap().push(kek);
                        acked_at.lock().unwrap().push(Instant::now());
                    }
                    Err(e) => {
                        failed
                            .lock()
                            .unwrap()
                            .push((e.code(), started.elapsed(), Instant::now()));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    let warm = within(Duration::from_secs(60), || async {
        acked.lock().unwrap().len() >= 40
    })
    .await;
    assert!(warm.is_some(), "keys were made before the failover");

    // The standby is synchronous: the primary waits for it before it
    // acknowledges a commit.
    assert_eq!(
        sql_one(
            &pport,
            "SELECT string_agg(sync_state, ',') FROM pg_stat_replication"
        )
        .await,
        "sync"
    );
    // The primary dies in the middle of the storm.
    assert!(pg_cluster(&["crash", primary.path()]), "the primary dies");
    let killed = Instant::now();
    let down = within(Duration::from_secs(10), || async {
        readyz(&servers[0].url).await == 503
    })
    .await;
    assert!(
        down.is_some(),
        "/readyz answers 503 while no primary exists"
    );
    let direct = servers[1].client();
    let started = Instant::now();
    let err = direct.generate(None).await.unwrap_err();
    assert!(err.code() == 5 || err.code() == 12, "{err}");
    let fail_time = started.elapsed();
    assert!(
        fail_time < Duration::from_secs(10),
        "fails fast: {fail_time:?}"
    );
    let acked_while_down = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(2000)).await;

    // The standby takes over.
    let promoting = Instant::now();
    assert!(
        pg_cluster(&["promote", standby.path()]),
        "the standby is promoted"
    );
    let promoted = Instant::now();
    let back = within(Duration::from_secs(60), || async {
        acked.lock().unwrap().len() > acked_while_down + 8
    })
    .await;
    let back = back.expect("the servers serve again after the promotion");
    let ready = within(Duration::from_secs(30), || async {
        let mut all = true;
        for s in &servers {
            all &= readyz(&s.url).await == 200;
        }
        all
    })
    .await;
    assert!(ready.is_some(), "every server is ready again");
    stop.store(true, Ordering::Relaxed);
    for task in storm {
        task.await.unwrap();
    }

    // No acknowledged key is lost: each one gives its DEK, through any
    // server.
    let acked = acked.lock().unwrap().clone();
    let reader = failover(&servers.iter().collect::<Vec<_>>());
    for kek in &acked {
        reader
            .get_key(kek)
            .await
            .unwrap_or_else(|e| panic!("key {} was acknowledged and is gone: {e}", kek.id()));
    }
    // Calls that failed while no primary existed failed with code 5 (or a
    // change whose answer was lost, which a client sees as a transport
    // error), and fast.
    for (code, took, _) in failed.lock().unwrap().iter() {
        assert!(matches!(code, 3 | 5 | 12), "code {code}");
        assert!(*took < Duration::from_secs(11), "a call hung for {took:?}");
    }

    // Every server listens on the new primary again.
    let listening = within(Duration::from_secs(20), || async {
        sql_one(
            &sport,
            "SELECT count(*)::text FROM pg_stat_activity WHERE query LIKE 'LISTEN%'",
        )
        .await
            == "3"
    })
    .await;
    assert!(listening.is_some(), "the servers LISTEN on the new primary");
    // The servers hear each other again (or keep nothing): a suspension
    // through one is seen through the others within the notification bound.
    let kek = &acked[0];
    let first = servers[0].client();
    first
        .change(Change::Suspend, &Target::Kek(kek.clone()))
        .await
        .unwrap();
    for s in &servers[1..] {
        let client = s.client();
        let seen = within(Duration::from_secs(3), || async {
            client.get_key(kek).await.is_err_and(|e| e.code() == 14)
        })
        .await;
        assert!(seen.is_some(), "a suspension is seen through every server");
    }
    // Nothing was acknowledged while no primary existed (beyond answers
    // of commits made just before the kill, still on their way), and the
    // first key after the promotion came within a bound.
    let times = acked_at.lock().unwrap().clone();
    // (An answer to a commit made just before the kill may arrive late on
    // a loaded machine: a second of grace.)
    let grace = killed + Duration::from_millis(1000);
    assert!(
        !times.iter().any(|t| *t > grace && *t < promoting),
        "a key was acknowledged while no primary existed"
    );
    let first_after = times
        .iter()
        .filter(|t| **t >= promoting)
        .min()
        .expect("keys after the promotion");
    let outage = first_after.duration_since(killed);
    let takeover = first_after.duration_since(promoting);
    assert!(
        takeover < Duration::from_secs(15),
        "serving again {takeover:?} after the promotion began"
    );
    let (failures, slowest) = {
        let failed = failed.lock().unwrap();
        let slowest = failed.iter().map(|f| f.1).max().unwrap_or_default();
        (failed.len(), slowest)
    };
    eprintln!(
        "failover: {} keys acknowledged, {failures} calls failed (each within {slowest:?}); \
         a call without a primary failed with code 5 in {fail_time:?}; first key \
         {takeover:?} after the promotion began (pg_ctl promote took {:?}), every /readyz \
         200 {:?} after it ended, {back:?} to 8 more keys; outage for clients {outage:?} \
         (of which 2 s waiting before promoting)",
        acked.len(),
        promoted.duration_since(promoting),
        ready.unwrap_or_default(),
    );
}

/// Three servers on one database hold one quota and one rate limit
/// between them: a principal with `max_keys = 7` calling `generate`
/// through all three at once gets exactly seven keys (counted in the
/// database, in the transaction that stores each key), and a principal
/// with `rate = 20` calling all three as fast as they answer is admitted
/// about 20 calls a second in all, not 60 (each server admits a third,
/// having counted the others' check-ins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
async fn three_servers_hold_one_quota_and_one_rate_limit() {
    use keyserver::policy::AuthPolicy;
    const APP: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
    const BUSY: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
    const RATE: f64 = 20.0;
    let Some(db) = postgres_db("one quota and one rate over three servers").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            "[[principal]]\nname = \"app\"\ntoken_sha256 = \"{}\"\n\
             methods = [\"generate\", \"status\"]\nmax_keys = 7\n\n\
             [[principal]]\nname = \"busy\"\ntoken_sha256 = \"{}\"\n\
             methods = [\"contains\", \"status\"]\nrate = {RATE}\n",
            AuthPolicy::token_hash(APP),
            AuthPolicy::token_hash(BUSY)
        ),
    )
    .unwrap();
    let auth = auth.to_str().unwrap();
    let servers: Vec<Server> = (0..3)
        .map(|_| Server::start(&db, &["--auth", auth, "--kek-alg", "ec"]))
        .collect();

    // The quota: twelve generates at once, four through each server.
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let client = crate::common::clients(&servers[i % 3].url, Some(APP)).remove(1);
            tokio::spawn(async move { client.generate(None).await })
        })
        .collect();
    let mut made = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => made += 1,
            Err(e) => assert_eq!(e.code(), 13, "over the quota: not permitted ({e})"),
        }
    }
    assert_eq!(made, 7, "exactly max_keys keys, whichever server made them");
    assert_eq!(
        sql_db(
            &db,
            "SELECT live::text FROM keyserver_owners WHERE owner = 'app'"
        )
        .await,
        "7"
    );

    // The rate: once every server has counted the three check-ins (each
    // checks in every 5 s), call all three as fast as they answer.
    within(Duration::from_secs(20), || async {
        sql_db(
            &db,
            "SELECT count(*)::text FROM keyserver_servers WHERE seen > now() - interval '15 seconds'",
        )
        .await
            == "3"
    })
    .await
    .expect("three servers check in");
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let span = Duration::from_secs(4);
    let start = Instant::now();
    let loops: Vec<_> = servers
        .iter()
        .map(|s| {
            let client = crate::common::clients(&s.url, Some(BUSY)).remove(1);
            tokio::spawn(async move {
                let (mut admitted, mut refused) = (0u32, 0u32);
                let id = keyserver::KeyId::from_bytes([3; 32]);
                while start.elapsed() < span {
                    match client.contains(&id).await {
                        Ok(_) => admitted += 1,
                        Err(e) => {
                            assert_eq!(e.code(), 12, "over the rate: busy ({e})");
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                }
                (admitted, refused)
            })
        })
        .collect();
    let mut admitted = 0;
    for l in loops {
        let (a, r) = l.await.unwrap();
        eprintln!("one server: {a} admitted, {r} refused");
        assert!(r > 0, "every server refuses past its share");
        admitted += a;
    }
    let secs = start.elapsed().as_secs_f64();
    // The documented bound: rate * t + max(rate, servers), while the
    // servers agree on their number.
    let bound = RATE * secs + RATE;
    eprintln!("{admitted} calls admitted in {secs:.2} s by three servers (rate {RATE}/s, bound {bound:.0})");
    assert!(f64::from(admitted) <= bound + 1.0, "{admitted} > {bound}");
    assert!(
        f64::from(admitted) >= RATE * secs * 0.75,
        "{admitted}: the shares add up to the rate"
    );
}

/// The first column of the first row of `query` on `db`, as text.
async fn sql_db(db: &str, query: &str) -> String {
    let (client, connection) = tokio_postgres::connect(db, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    let value: String = client.query_one(query, &[]).await.unwrap().get(0);
    drop(client);
    let _ = task.await;
    value
}
