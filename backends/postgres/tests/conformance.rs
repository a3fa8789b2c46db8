//! The public conformance kit on this storage, from its own crate, on a new
//! database for each check; and the record cache in front of it, following
//! the storage's change feed.
//!
//! They need a PostgreSQL cluster, so they are ignored unless asked for:
//! `export KEYSERVER_TEST_POSTGRES=$(scripts/pg-cluster start /tmp/ks-pg)`,
//! then `cargo test -p keyserver-postgres -- --ignored` (what `.ci/run` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use keyserver_core::plugin::RecordCache;
use keyserver_postgres::PostgresStorage;

/// A new, empty database on the cluster `KEYSERVER_TEST_POSTGRES` names
/// (a URL whose role may create databases).
async fn fresh_database() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let admin = std::env::var("KEYSERVER_TEST_POSTGRES").expect(
        "KEYSERVER_TEST_POSTGRES names a PostgreSQL cluster (scripts/pg-cluster start DIR prints one)",
    );
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("KEYSERVER_TEST_POSTGRES={admin}: {e}"));
    let task = tokio::spawn(connection);
    let name = format!(
        "ks_pgcrate_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
    let (base, _) = admin
        .rsplit_once('/')
        .expect("KEYSERVER_TEST_POSTGRES is a URL with a database");
    format!("{base}/{name}")
}

keyserver_testing::storage_conformance!(
    #[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
    postgres,
    {
        let store = PostgresStorage::connect(&fresh_database().await)
            .await
            .unwrap();
        (store, ())
    }
);

keyserver_testing::storage_conformance!(
    #[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
    cached_postgres,
    {
        let store = PostgresStorage::connect(&fresh_database().await)
            .await
            .unwrap();
        let cache = Arc::new(RecordCache::new(store, 4));
        let follower = Arc::clone(&cache);
        let watch = cache.inner().watch(move |feed| feed.apply_to(&follower));
        (cache, AbortOnDrop(watch))
    }
);

/// Stops a background task when the check ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One server at a time leads the scheduled destructions: of two stores on
/// one database, one takes the lead and the other does not; the lead
/// holds while its session lives; when the leader lets go, or its session
/// is ended from the database (a leader that died or was cut off), the
/// other takes it.
#[test]
#[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
fn one_server_leads_and_another_takes_over() {
    use keyserver_core::KeyStorage;
    keyserver_testing::run(async {
        let url = fresh_database().await;
        let a = PostgresStorage::connect(&url).await.unwrap();
        let b = PostgresStorage::connect(&url).await.unwrap();
        let lead = a
            .try_lead()
            .await
            .unwrap()
            .expect("the first takes the lead");
        assert!(
            b.try_lead().await.unwrap().is_none(),
            "one leader at a time"
        );
        assert!(a.try_lead().await.unwrap().is_none(), "even for itself");
        // A follower tries on one kept session, not a new one per try.
        for _ in 0..10 {
            assert!(b.try_lead().await.unwrap().is_none());
        }
        let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let watcher = tokio::spawn(connection);
        let sessions: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'keyserver-leader'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(sessions, 3, "the lead's session and one per follower");
        drop(admin);
        let _ = watcher.await;
        assert!(lead.held().await);
        drop(lead);
        let mut taken = None;
        for _ in 0..100 {
            if let Some(l) = b.try_lead().await.unwrap() {
                taken = Some(l);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let lead = taken.expect("the other takes the lead once it is let go");
        // The database ends the leader's session (as it does for a leader
        // that died or stayed silent): the lead is no longer held, and the
        // other store takes it.
        let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(connection);
        admin
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'keyserver-leader'",
            )
            .await
            .unwrap();
        let mut lost = false;
        for _ in 0..100 {
            if !lead.held().await {
                lost = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(lost, "a lead whose session ended is not held");
        assert!(a.try_lead().await.unwrap().is_some(), "and is free again");
        drop(admin);
        let _ = task.await;
    });
}

/// The schema as version 2 left it, on the database at `url`, and a
/// session on it (with the task driving its connection).
async fn version_2_database(url: &str) -> (tokio_postgres::Client, tokio::task::JoinHandle<()>) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    client
        .batch_execute(concat!(
            include_str!("../src/v1.sql"),
            include_str!("../src/v2.sql"),
            "CREATE TABLE keyserver_schema (id integer PRIMARY KEY CHECK (id = 1),
                 version integer NOT NULL);
             INSERT INTO keyserver_schema VALUES (1, 2);"
        ))
        .await
        .unwrap();
    (client, task)
}

/// A database that schema version 2 wrote (owned keys, a destroyed one, a
/// destroy-pending one, damaged metadata) upgrades to version 3 with its
/// owners counted and its due keys indexed, from the metadata itself.
#[test]
#[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
fn version_3_counts_and_indexes_what_version_2_stored() {
    use keyserver_core::{KeyMeta, KeyState, KeyStorage, Strength};
    use keyserver_testing::storage::record;
    keyserver_testing::run(async {
        let url = fresh_database().await;
        let (client, task) = version_2_database(&url).await;
        let mut metas = Vec::new();
        for n in 0..7u32 {
            let rec = record(n);
            let mut meta = KeyMeta::new(*rec.key_id(), Strength::S128, 1, Some("a".into()));
            match n {
                // Destroyed: without its record (done), with it (due).
                3 | 5 => meta.state = KeyState::Destroyed,
                4 => {
                    meta.state = KeyState::DestroyPending;
                    meta.destroy_at = Some(1_000);
                }
                // A time past PostgreSQL's bigint: still counted.
                6 => {
                    meta.state = KeyState::DestroyPending;
                    meta.destroy_at = Some(u64::MAX);
                }
                _ => {}
            }
            if n != 3 {
                client
                    .execute(
                        "INSERT INTO keyserver_records VALUES ($1, $2)",
                        &[&rec.key_id().as_bytes().to_vec(), &rec.encode()],
                    )
                    .await
                    .unwrap();
            }
            client
                .execute(
                    "INSERT INTO keyserver_meta VALUES ($1, $2)",
                    &[&rec.key_id().as_bytes().to_vec(), &meta.encode()],
                )
                .await
                .unwrap();
            metas.push(meta);
        }
        // Damaged metadata, and metadata of another key: counted for
        // nobody, never due, no failure.
        client
            .execute(
                "INSERT INTO keyserver_meta VALUES ($1, $2)",
                &[&vec![7u8; 32], &b"{\"owner\":\"a\"}\nnot-a-sum\n".to_vec()],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO keyserver_meta VALUES ($1, $2)",
                &[&vec![8u8; 32], &metas[0].encode()],
            )
            .await
            .unwrap();
        drop(client);
        let _ = task.await;

        let store = PostgresStorage::connect(&url).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), 3);
        // Five live keys of "a" (the destroyed ones do not count).
        let rec = record(10);
        let meta = KeyMeta::new(*rec.key_id(), Strength::S128, 1, Some("a".into()));
        assert!(matches!(
            store.put_new(&rec, Some(&meta), Some(5)).await,
            Err(keyserver_core::Error::NotPermitted)
        ));
        store.put_new(&rec, Some(&meta), Some(6)).await.unwrap();
        // The destroyed key whose record is still stored is due; the
        // destroy-pending keys from their destruction times.
        let due = store.due_keys(u64::MAX, None, 10).await.unwrap().unwrap();
        assert_eq!(
            due,
            vec![
                (1, metas[5].key_id),
                (1_000, metas[4].key_id),
                (i64::MAX as u64, metas[6].key_id)
            ]
        );
        assert_eq!(
            store.due_keys(999, None, 10).await.unwrap().unwrap(),
            vec![(1, metas[5].key_id)]
        );
    });
}

/// A server whose role has only the rights docs/OPERATIONS.md lists for
/// schema version 2 (`SELECT`, `INSERT`, `UPDATE`, `DELETE` on the records
/// and metadata, `SELECT` on the schema version) does everything a server
/// does once the owner's role upgraded the database to version 3 (which
/// gives it the same rights on the new tables): keys within a quota, state
/// changes and destruction (which the owners' counts follow), the due
/// keys, pages, check-ins. A role with no rights on them is refused.
#[test]
#[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
fn a_role_with_only_the_documented_rights_serves() {
    use keyserver_core::{Error, KeyMeta, KeyState, KeyStorage, Strength};
    use keyserver_testing::storage::record;
    keyserver_testing::run(async {
        let url = fresh_database().await;
        // A version-2 database whose server role has the version-2 rights.
        let role = format!(
            "ks_server_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros()
        );
        let (client, task) = version_2_database(&url).await;
        let grant = |role: &str| {
            format!(
                "CREATE ROLE {role} LOGIN;
                 GRANT SELECT, INSERT, UPDATE, DELETE ON keyserver_records, keyserver_meta TO {role};
                 GRANT SELECT ON keyserver_schema TO {role};"
            )
        };
        client.batch_execute(&grant(&role)).await.unwrap();
        // The owner's role upgrades it.
        drop(PostgresStorage::connect(&url).await.unwrap());
        // A role given only the version-2 rights after the upgrade has no
        // right to the owners' counts: refused, nothing stored.
        let late = format!("{role}_late");
        client.batch_execute(&grant(&late)).await.unwrap();
        let (base, db) = url.rsplit_once('/').unwrap();
        let (scheme, rest) = base.split_once("://").unwrap();
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let as_server = format!("{scheme}://{role}@{host}/{db}");
        let refused = PostgresStorage::connect(&format!("{scheme}://{late}@{host}/{db}"))
            .await
            .unwrap();
        let rec = record(9);
        let meta = KeyMeta::new(*rec.key_id(), Strength::S128, 1, Some("app".into()));
        assert!(matches!(
            refused.put_new(&rec, Some(&meta), Some(3)).await,
            Err(Error::Storage { .. })
        ));
        assert!(!refused.contains(rec.key_id()).await.unwrap());
        let store = PostgresStorage::connect(&as_server).await.unwrap();
        for n in 0..3u32 {
            let rec = record(n);
            let meta = KeyMeta::new(*rec.key_id(), Strength::S128, 1, Some("app".into()));
            store.put_new(&rec, Some(&meta), Some(3)).await.unwrap();
        }
        let rec = record(3);
        let meta = KeyMeta::new(*rec.key_id(), Strength::S128, 1, Some("app".into()));
        assert!(matches!(
            store.put_new(&rec, Some(&meta), Some(3)).await,
            Err(Error::NotPermitted)
        ));
        let mut gone = store.get_meta(record(0).key_id()).await.unwrap().unwrap();
        gone.state = KeyState::Destroyed;
        gone.changed = 10;
        store.put_meta(&gone).await.unwrap();
        assert_eq!(
            store.due_keys(u64::MAX, None, 10).await.unwrap().unwrap(),
            vec![(10, gone.key_id)],
            "destroyed, its record still stored"
        );
        assert!(store.delete(&gone.key_id).await.unwrap());
        assert!(store
            .due_keys(u64::MAX, None, 10)
            .await
            .unwrap()
            .unwrap()
            .is_empty());
        store.put_new(&rec, Some(&meta), Some(3)).await.unwrap();
        assert_eq!(store.list_page(None, 10).await.unwrap().len(), 4);
        assert_eq!(store.check_in().await.unwrap(), 1);
        let other = PostgresStorage::connect(&as_server).await.unwrap();
        assert_eq!(other.check_in().await.unwrap(), 2);
        let _lock = store.lock_key(rec.key_id()).await.unwrap();
        drop(client);
        let _ = task.await;
    });
}
