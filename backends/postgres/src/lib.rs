//! `PostgresStorage`: records and lifecycle metadata in PostgreSQL, shared
//! by any number of stateless key servers.
//!
//! Schema (version 1, applied at connect under an advisory lock; see
//! docs/OPERATIONS.md):
//!
//! ```text
//! keyserver_schema   (id = 1, version)          the schema version
//! keyserver_records  (key_id bytea PK, record)  docs/FORMAT.md's record, checksummed
//! keyserver_meta     (key_id bytea PK, meta)    docs/FORMAT.md's key metadata
//! ```
//!
//! Records are create-only in the database itself: a trigger refuses every
//! `UPDATE` of `keyserver_records`. Every change of metadata and every
//! deleted record is announced with `NOTIFY keyserver_keys, 'KEYID-HEX'` by
//! a trigger, whoever made it (a server, `keyserver copy`, a DBA's SQL), so
//! the record caches of the other servers forget the key
//! ([`PostgresStorage::watch`]).
//!
//! A crate of [keyserver](https://github.com/keyserver/keyserver), built only on
//! the public plugin API of `keyserver-core`, as a third party's backend would be.
//! Applications reach it as `keyserver::backends` with its Cargo feature.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{AsyncMessage, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use keyserver_core::plugin::{KeyLock, KeyStorage, Lease, RecordCache};
use keyserver_core::{Error, KeyId, KeyMeta, Result, WrappedDek};

const NAME: &str = "postgres";

/// The schema versions this build knows, in order: each is applied once, in
/// its own transaction, under the migration lock.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("v1.sql")),
    (2, include_str!("v2.sql")),
    (3, include_str!("v3.sql")),
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 3;

/// The channel the triggers announce changed keys on.
const CHANNEL: &str = "keyserver_keys";

/// Advisory lock classes (the two-key form: class, object), so ours never
/// meet another application's single-key locks in the same database.
const LOCK_MIGRATE: i32 = 0x6b73_0001;
const LOCK_KEY: i32 = 0x6b73_0002;
/// The advisory lock whose holder runs the scheduled destructions.
const LOCK_SWEEP: i32 = 0x6b73_0003;
/// How long the database keeps the leader's session when the leader says
/// nothing (it checks its lease every few seconds): a leader cut off from
/// the database loses the lead within this.
const LEASE_IDLE_TIMEOUT: &str = "30s";
/// How often the leader's session says something.
const LEASE_HEARTBEAT: Duration = Duration::from_secs(5);

/// How a [`PostgresStorage`] connects and how long it waits.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Connections in the pool (default 16).
    pub pool_size: usize,
    /// The longest any one operation may take, waiting for a connection
    /// included (default 5 s): past it the call fails with a storage error
    /// (code 5) instead of hanging while the database is away.
    pub timeout: Duration,
    /// The longest a new connection may take to open (default 2 s).
    pub connect_timeout: Duration,
    /// The longest a schema upgrade may take (default 10 min). An upgrade
    /// that rewrites a table (version 3 derives columns of every key's
    /// metadata: docs/OPERATIONS.md gives its measured rate) holds the
    /// table meanwhile; past this the database gives it up and nothing
    /// changes.
    pub migrate_timeout: Duration,
    /// How often a session of its own asks the database whether it
    /// answers (default 150 ms; at least 10 ms).
    pub probe_every: Duration,
    /// How long the database may take to answer that probe (default
    /// 300 ms; at least 10 ms). Two probes in a row unanswered in time, or
    /// one refused or closed session, and the database counts as
    /// unreachable: calls in flight are given up and new ones refused at
    /// once (code 5), the record cache keeps nothing and `/readyz` says
    /// 503, until a probe is answered again. A server cut off from its
    /// database in silence answers within `2 × probe_timeout +
    /// probe_every` (750 ms), not after the whole `timeout`.
    pub probe_timeout: Duration,
    /// CA certificates (PEM) that vouch for the database's TLS certificate,
    /// besides the system's roots: the URL's `sslrootcert`, else this, else
    /// the file `PGSSLROOTCERT` names.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 16,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            migrate_timeout: Duration::from_secs(600),
            probe_every: Duration::from_millis(150),
            probe_timeout: Duration::from_millis(300),
            ca_file: None,
        }
    }
}

/// Records and lifecycle metadata in a PostgreSQL database, shared by any
/// number of key servers: no exclusive lock, every change one statement or
/// one transaction, lifecycle changes serialised across servers by an
/// advisory lock per key ([`KeyStorage::lock_key`]).
///
/// `url` is a libpq-style URL, `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`
/// (or `postgresql://`), with its parameters (`sslmode`,
/// `connect_timeout`, `application_name`...). With `sslmode=require` (or
/// `prefer`, the default, against a server that offers TLS) the connection
/// is TLS through rustls, and the server's certificate is verified against
/// the system's roots and the CA file named by the URL's `sslrootcert`,
/// [`PostgresOptions::ca_file`] or `PGSSLROOTCERT`.
///
/// `count` is this process's view: read at connect, followed by its own
/// puts and deletes, and read again every minute by
/// [`PostgresStorage::watch`].
///
/// To serve hot keys from memory, wrap it in a
/// [`RecordCache`] with a TTL and have
/// [`PostgresStorage::watch`] invalidate it: the `keyserver` command does.
///
/// Feature `storage-postgres`.
///
/// # Example
///
/// ```no_run
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use keyserver_core::{KeyId, KeyStorage, Strength, WrappedDek};
/// use keyserver_postgres::PostgresStorage;
///
/// let store = PostgresStorage::connect("postgres://keyserver@127.0.0.1:5432/keyserver").await?;
/// let rec = WrappedDek::new(KeyId::from_bytes([1; 32]), 3072, Strength::S128, 0, vec![0; 384])?;
/// store.put(&rec).await?;
/// assert_eq!(store.get(rec.key_id()).await?, rec);
/// # Ok::<(), keyserver_core::Error>(())
/// # }).unwrap();
/// ```
pub struct PostgresStorage {
    pool: Pool,
    /// The time a new connection may take: the connect timeout for
    /// each host of the URL.
    create_timeout: Duration,
    config: Config,
    tls: MakeRustlsConnect,
    options: PostgresOptions,
    count: Arc<AtomicU64>,
    /// The sessions holding this process's key locks.
    held: Held,
    /// The session a server that does not lead tries the lead on, kept
    /// between tries (one connection per follower, not one per try).
    follower: tokio::sync::Mutex<Option<LeadSession>>,
    /// This process's name in `keyserver_servers`: 128 random bits.
    server_id: String,
    /// `true` while the database does not answer the health probe.
    down: tokio::sync::watch::Receiver<bool>,
    /// The health probe, stopped with the storage.
    probe: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresStorage {
    fn drop(&mut self) {
        self.probe.abort();
    }
}

/// A session of its own for the lead (outside the pool), and the task
/// driving its connection (aborted when the session is dropped).
struct LeadSession {
    client: Arc<tokio_postgres::Client>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for LeadSession {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration may hold a password: never printed.
        f.debug_struct("PostgresStorage")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A storage error of this backend.
fn failed(message: impl Into<String>, source: Option<tokio_postgres::Error>) -> Error {
    Error::Storage {
        backend: NAME.into(),
        message: message.into(),
        source: source.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    }
}

/// libpq's URL parameters that tokio-postgres does not take: `sslrootcert`
/// (taken out: the CA file), and `sslmode=verify-ca` or `verify-full`
/// (as `require`, which verifies the certificate and the host name here
/// anyway). The URL for tokio-postgres and the CA file, if named.
fn libpq_params(url: &str) -> (String, Option<std::path::PathBuf>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut ca = None;
    let mut kept = Vec::new();
    for param in query.split('&') {
        match param.split_once('=') {
            Some(("sslrootcert", path)) => ca = Some(std::path::PathBuf::from(path)),
            Some(("sslmode", "verify-ca" | "verify-full")) => kept.push("sslmode=require"),
            _ => kept.push(param),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, ca)
}

/// Whether every host is this machine (a Unix socket, or a loopback name or
/// address).
fn all_local(hosts: &[tokio_postgres::config::Host]) -> bool {
    use tokio_postgres::config::Host;
    hosts.iter().all(|h| match h {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => true,
    })
}

/// The client TLS configuration: the system's roots and `ca_file`.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let shown = path.display();
        let pem = std::fs::read(path)
            .map_err(|e| Error::storage(NAME, format!("the CA file {shown}"), e))?;
        let mut added = 0;
        for der in pem_rfc7468_certs(&pem) {
            roots.add(der.into()).map_err(|e| {
                Error::storage(
                    NAME,
                    format!("the CA file {shown} holds a bad certificate"),
                    e,
                )
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(failed(
                format!("the CA file {shown} holds no certificate"),
                None,
            ));
        }
    }
    // *ring*'s provider, given explicitly: classical key exchange (rustls
    // deprecates it for its lack of post-quantum groups since 0.23.48), and
    // no C library in a build that asked for none.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::storage(NAME, "TLS configuration", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The DER of every `CERTIFICATE` block of a PEM file.
fn pem_rfc7468_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let block = &rest[start..start + len + END.len()];
        if let Ok((_, der)) = pem_rfc7468::decode_vec(block.as_bytes()) {
            out.push(der);
        }
        rest = &rest[start + len + END.len()..];
    }
    out
}

impl PostgresStorage {
    /// Connects with [`PostgresOptions::default`].
    ///
    /// # Errors
    /// As for [`PostgresStorage::connect_with`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects to the database at `url`, applies the schema changes it
    /// lacks (under an advisory lock: servers starting together apply each
    /// once), and counts the records.
    ///
    /// # Errors
    /// [`Error::Storage`] if the URL does not parse (the message never
    /// repeats it: it may hold a password), the database cannot be reached
    /// within the timeouts, or its schema is newer than this build knows.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(failed(
                "the URL must start with postgres:// or postgresql://",
                None,
            ));
        }
        let (url, url_ca) = libpq_params(url);
        let ca_file = url_ca
            .or_else(|| options.ca_file.clone())
            .or_else(|| std::env::var_os("PGSSLROOTCERT").map(Into::into));
        let mut config = Config::from_str(&url)
            .map_err(|e| failed("the database URL does not parse", Some(e)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        // libpq's default, `prefer`, lets anyone in the path answer "no
        // TLS" and read or rewrite everything: off this machine, TLS is
        // required unless the URL says otherwise.
        if !url.contains("sslmode=") && !all_local(config.get_hosts()) {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        if config.get_application_name().is_none() {
            config.application_name("keyserver");
        }

        let tls = tls_config(ca_file.as_deref())?;
        // tokio-postgres tries the hosts of a multi-host URL in turn, each
        // within the connect timeout: a connection may take that long per
        // host (a failed primary that drops packets uses its whole share
        // before the standby is tried).
        let hosts = u32::try_from(config.get_hosts().len().max(1)).unwrap_or(u32::MAX);
        let per_host = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(options.connect_timeout);
        let create_timeout = per_host.saturating_mul(hosts) + Duration::from_secs(1);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(create_timeout))
            .recycle_timeout(Some(options.timeout))
            // The database's side of each pooled session probes a silent
            // peer too, so that the sessions (and the key locks they hold)
            // of a server cut off altogether end within about 25 s, not
            // the system's two hours. Plain `SET`s: a pooler in session
            // mode passes them on.
            .post_create(deadpool_postgres::Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute(
                            "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
                             SET tcp_keepalives_count = 3",
                        )
                        .await
                        .map_err(deadpool_postgres::HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| Error::storage(NAME, "connection pool", e))?;
        let server_id = server_id()?;
        let (health, down) = tokio::sync::watch::channel(false);
        let probe = tokio::spawn(probe(
            config.clone(),
            tls.clone(),
            health,
            options.probe_every,
            options.probe_timeout,
            create_timeout,
        ));
        let store = PostgresStorage {
            down,
            probe,
            pool,
            create_timeout,
            config,
            tls,
            options,
            count: Arc::new(AtomicU64::new(0)),
            held: Held::default(),
            follower: tokio::sync::Mutex::new(None),
            server_id,
        };
        store.migrate().await?;
        store.recount().await?;
        Ok(store)
    }

    /// A new session for the lead: named, and ended by the database when
    /// it says nothing for LEASE_IDLE_TIMEOUT (PostgreSQL 14 and later;
    /// before, the TCP keepalives end it, later).
    async fn lead_session(&self) -> Result<LeadSession> {
        let (client, connection) =
            tokio::time::timeout(self.create_timeout, self.config.connect(self.tls.clone()))
                .await
                .map_err(|_| failed("taking the lead: connect timed out", None))?
                .map_err(|e| failed("taking the lead", Some(e)))?;
        let session = LeadSession {
            client: Arc::new(client),
            driver: tokio::spawn(async move {
                let _ = connection.await;
            }),
        };
        tokio::time::timeout(
            self.options.timeout,
            session
                .client
                .batch_execute("SET application_name = 'keyserver-leader'"),
        )
        .await
        .map_err(|_| failed("taking the lead: timed out", None))?
        .map_err(|e| failed("taking the lead", Some(e)))?;
        let _ = tokio::time::timeout(
            self.options.timeout,
            session.client.batch_execute(&format!(
                "SET idle_session_timeout = '{LEASE_IDLE_TIMEOUT}'"
            )),
        )
        .await;
        Ok(session)
    }

    /// A connection from the pool, within the time limit.
    async fn conn(&self) -> Result<Object> {
        self.pool
            .get()
            .await
            .map_err(|e| Error::storage(NAME, "no connection to the database", e))
    }

    /// The session holding `key`'s lock in this process, if one does.
    fn held_slot(&self, key: Option<&KeyId>) -> Option<Arc<tokio::sync::Mutex<Closing>>> {
        let key = key?;
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Runs `op` on a pooled connection within the time limit (on the
    /// session that holds `key`'s lock, if this process holds it). A
    /// connection whose statement was given up is closed, never reused.
    async fn with_conn<T, F>(&self, what: &'static str, op: F) -> Result<T>
    where
        F: for<'c> FnOnce(&'c Object) -> Op<'c, T>,
    {
        self.with_key(None, what, op).await
    }

    /// [`PostgresStorage::with_conn`] for an operation on one key.
    async fn with_key<T, F>(&self, key: Option<&KeyId>, what: &'static str, op: F) -> Result<T>
    where
        F: for<'c> FnOnce(&'c Object) -> Op<'c, T>,
    {
        if *self.down.borrow() {
            return Err(unreachable(what));
        }
        let mut down = self.down.clone();
        let held = self.held_slot(key);
        let run = async {
            if let Some(slot) = held {
                // This key's lock is held here: its reads and writes go
                // through the locked session, so the unlock (queued on
                // the same session when the lock is dropped) comes after
                // them even if this call is given up.
                let conn = slot.lock().await;
                if let Some(conn) = conn.0.as_ref() {
                    return op(conn).await.map_err(|e| failed(what, Some(e)));
                }
                // Released just now: the pool serves it like any other key.
            }
            let conn = Closing(Some(self.conn().await?));
            let result = op(conn.get()).await;
            conn.done();
            result.map_err(|e| failed(what, Some(e)))
        };
        let timed = tokio::time::timeout(self.options.timeout, run);
        tokio::select! {
            // A call that finished keeps its answer, even if the probe
            // finds the database away at the same moment.
            biased;
            done = timed => done.unwrap_or_else(|_| {
                Err(failed(
                    format!(
                        "{what}: the database did not answer within {:?}",
                        self.options.timeout
                    ),
                    None,
                ))
            }),
            // Given up the moment the probe finds the database unreachable:
            // a partition costs a caller the probe's time, not `timeout`.
            () = until_down(&mut down) => Err(unreachable(what)),
        }
    }

    /// Applies the schema changes this database lacks, in one transaction
    /// under the migration lock.
    async fn migrate(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let run = async {
            // Up to date: nothing to do, and nothing that needs the right to
            // create tables (a role with only row privileges runs a server).
            let current = conn
                .query_one(
                    "SELECT CASE WHEN to_regclass('keyserver_schema') IS NULL THEN 0
                     ELSE (SELECT coalesce(max(version), 0) FROM keyserver_schema) END",
                    &[],
                )
                .await;
            if let Ok(row) = current {
                let found: i32 = row.get(0);
                if found == SCHEMA_VERSION {
                    return Ok(Ok(()));
                }
            }
            let tx = conn.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_MIGRATE])
                .await?;
            // "already exists, skipping" is the expected case, not news.
            // A schema change waits for no one's long read: queued behind
            // one, its lock would stall every server's queries.
            tx.batch_execute("SET LOCAL lock_timeout = '5s'").await?;
            // The database stops an upgrade that takes too long itself:
            // a session closed on our side might not be noticed until it
            // is done.
            tx.batch_execute(&format!(
                "SET LOCAL statement_timeout = {}",
                self.options.migrate_timeout.as_millis().max(1)
            ))
            .await?;
            // And one whose client gave up (PostgreSQL 14 and later notice
            // a closed connection while a statement runs).
            let version: i32 = tx
                .query_one("SELECT current_setting('server_version_num')::int", &[])
                .await?
                .get(0);
            if version >= 140_000 {
                tx.batch_execute("SET LOCAL client_connection_check_interval = 1000")
                    .await?;
            }
            tx.batch_execute("SET LOCAL client_min_messages = warning")
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS keyserver_schema (
                     id integer PRIMARY KEY CHECK (id = 1),
                     version integer NOT NULL
                 )",
            )
            .await?;
            let row = tx
                .query_opt("SELECT version FROM keyserver_schema WHERE id = 1", &[])
                .await?;
            let found: i32 = row.map_or(0, |r| r.get(0));
            if found > SCHEMA_VERSION {
                return Ok(Err(failed(
                    format!(
                        "the database's schema is version {found}, newer than this keyserver \
                         knows ({SCHEMA_VERSION}): upgrade keyserver"
                    ),
                    None,
                )));
            }
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO keyserver_schema (id, version) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
                    &[version],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(Ok(()))
        };
        let limit = self.options.migrate_timeout + self.options.timeout;
        let outcome = tokio::time::timeout(limit, run).await;
        let Ok(outcome) = outcome else {
            // Never back to the pool with the upgrade's transaction open.
            drop(Object::take(conn));
            return Err(failed("migrating the schema took too long", None));
        };
        outcome.map_err(|e| failed("migrating the schema", Some(e)))?
    }

    /// Reads the number of records again.
    async fn recount(&self) -> Result<u64> {
        let n: i64 = self
            .with_conn("counting the records", |c| {
                Box::pin(async move {
                    let row = c
                        .query_one("SELECT count(*) FROM keyserver_records", &[])
                        .await?;
                    Ok(row.get(0))
                })
            })
            .await?;
        let n = u64::try_from(n).unwrap_or(0);
        self.count.store(n, Ordering::Relaxed);
        Ok(n)
    }

    /// The one `bytea` column `sql` selects for `key_id` (its `$1`), if any.
    async fn read_blob(
        &self,
        key_id: &KeyId,
        what: &'static str,
        sql: &'static str,
    ) -> Result<Option<Vec<u8>>> {
        let id = key_id.as_bytes().to_vec();
        self.with_key(Some(key_id), what, |c| {
            Box::pin(async move {
                let stmt = c.prepare_cached(sql).await?;
                Ok(c.query_opt(&stmt, &[&id]).await?.map(|row| row.get(0)))
            })
        })
        .await
    }

    /// The schema version of the database.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn schema_version(&self) -> Result<i32> {
        self.with_conn("reading the schema version", |c| {
            Box::pin(async move {
                let row = c
                    .query_one("SELECT version FROM keyserver_schema WHERE id = 1", &[])
                    .await?;
                Ok(row.get(0))
            })
        })
        .await
    }

    /// Listens for changes made through any server (or any SQL) and tells
    /// `changed` about each ([`Feed`]). Runs until the returned task is
    /// aborted, reconnecting with backoff (100 ms doubling to 5 s); proves
    /// the listening connection alive every 10 s; recounts the records
    /// every minute, or every hundred times the last count's time if that
    /// is longer (a large store: at most about 1 % of the time).
    ///
    /// The bound on how long another server's change goes unseen by a cache
    /// fed by this is the time its notification takes to arrive
    /// (PostgreSQL sends it at commit) while listening, and nothing while
    /// not, if the cache keeps nothing then: [`Feed::apply_to`] does
    /// exactly that.
    pub fn watch(
        &self,
        changed: impl Fn(Feed) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let count = Arc::clone(&self.count);
        let pool = self.pool.clone();
        let timeout = self.options.timeout;
        let down = self.down.clone();
        tokio::spawn(async move {
            // What the last count of the records took, across reconnects.
            let cost_ms = Arc::new(AtomicU64::new(0));
            let mut backoff = Duration::from_millis(100);
            loop {
                let began = std::time::Instant::now();
                let mut unreachable = down.clone();
                let Err(e) = tokio::select! {
                    heard = listen(&config, tls.clone(), &pool, &count, timeout, &cost_ms, &changed) => heard,
                    // Cut off from the database, nothing said on this
                    // connection can be trusted to arrive: the cache keeps
                    // nothing until it listens again.
                    () = until_down(&mut unreachable) => {
                        Err("the database does not answer the health probe".to_string())
                    }
                };
                tracing::warn!(
                    target: "keyserver::storage",
                    "postgres: not listening for changes of other servers ({e}); \
                     serving without the record cache until it is back"
                );
                if began.elapsed() > Duration::from_secs(30) {
                    // It had been listening for a while: a new outage.
                    backoff = Duration::from_millis(100);
                }
                // Whatever was heard, the connection is gone: anything since
                // may be missed.
                changed(Feed::Lost);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        })
    }
}

/// What [`PostgresStorage::watch`] hears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Feed {
    /// The key's metadata changed or its record was deleted.
    Changed(KeyId),
    /// Listening (again): every change from now on is heard; changes before
    /// may have been missed.
    Listening,
    /// Not listening: changes are not heard until [`Feed::Listening`].
    Lost,
}

impl Feed {
    /// Applies this announcement to a [`RecordCache`] in front of the
    /// storage: a changed key is forgotten; while announcements cannot be
    /// heard, nothing is kept.
    pub fn apply_to<S: KeyStorage>(self, cache: &RecordCache<S>) {
        match self {
            Feed::Changed(key_id) => cache.invalidate(&key_id),
            Feed::Listening => cache.invalidate_all(false),
            Feed::Lost => cache.invalidate_all(true),
        }
    }
}

/// One listening session: LISTEN, announce that the feed is live, then
/// forward notifications until the connection ends.
async fn listen(
    config: &Config,
    tls: MakeRustlsConnect,
    pool: &Pool,
    count: &Arc<AtomicU64>,
    timeout: Duration,
    cost_ms: &Arc<AtomicU64>,
    changed: &(impl Fn(Feed) + Send + Sync),
) -> std::result::Result<std::convert::Infallible, String> {
    use futures_util::StreamExt;
    let (client, mut connection) = tokio::time::timeout(timeout, config.connect(tls))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(Some(n.payload().to_string())).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(None);
                    return Err(e.to_string());
                }
            }
        }
        let _ = tx.send(None);
        Ok(())
    });
    let result = async {
        tokio::time::timeout(timeout, client.batch_execute(&format!("LISTEN {CHANNEL}")))
            .await
            .map_err(|_| "LISTEN timed out".to_string())?
            .map_err(|e| e.to_string())?;
        // Listening from here on: forget what was kept before, keep again.
        changed(Feed::Listening);
        // Every minute, or less often when counting is costly (2.1 s at
        // ten million records): never more than about 1 % of the time.
        let next_recount = |cost: &AtomicU64| {
            let cost = Duration::from_millis(cost.load(Ordering::Relaxed));
            tokio::time::Instant::now() + Duration::from_secs(60).max(cost * 100)
        };
        let recount = tokio::time::sleep_until(next_recount(cost_ms));
        tokio::pin!(recount);
        let mut probe = tokio::time::interval(Duration::from_secs(10));
        probe.tick().await;
        loop {
            tokio::select! {
                message = rx.recv() => match message {
                    Some(Some(payload)) => match payload.parse::<KeyId>() {
                        Ok(id) => changed(Feed::Changed(id)),
                        // Not ours to read: forget everything to be safe.
                        Err(_) => changed(Feed::Listening),
                    },
                    _ => return Err("the listening connection closed".to_string()),
                },
                _ = probe.tick() => {
                    // A connection that died silently (no FIN) must not
                    // leave the cache trusted: a query proves it alive.
                    match tokio::time::timeout(timeout, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        _ => return Err("the listening connection stopped answering".to_string()),
                    }
                }
                () = &mut recount => {
                    // On a task of its own: notifications are not held up.
                    let (pool, count) = (pool.clone(), Arc::clone(count));
                    let cost = Arc::clone(cost_ms);
                    tokio::spawn(async move {
                        let Ok(conn) = pool.get().await else {
                            return;
                        };
                        // Closed, never pooled, if the count is given up:
                        // it may still be running on the session.
                        let conn = Closing(Some(conn));
                        let began = std::time::Instant::now();
                        let counted = tokio::time::timeout(
                            timeout,
                            conn.get().query_one("SELECT count(*) FROM keyserver_records", &[]),
                        )
                        .await;
                        let took = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
                        cost.store(took, Ordering::Relaxed);
                        if let Ok(Ok(row)) = counted {
                            conn.done();
                            let n: i64 = row.get(0);
                            count.store(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
                        }
                    });
                    // The cost of the count before this one sets the pace.
                    recount.as_mut().reset(next_recount(cost_ms));
                }
            }
        }
    }
    .await;
    pump.abort();
    result
}

/// One database operation on a borrowed connection.
type Op<'c, T> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>> + Send + 'c,
    >,
>;

/// A pooled connection that is closed when dropped, unless [`Closing::done`]
/// returns it to the pool: a statement given up half way (its future
/// dropped) may still be running on it.
struct Closing(Option<Object>);

impl Closing {
    fn get(&self) -> &Object {
        self.0.as_ref().expect("a connection until done") // ok: Some until done() or drop
    }

    /// Back to the pool: nothing is pending on it.
    fn done(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(Object::take(conn));
        }
    }
}

/// The sessions holding key locks in this process, by key.
type Held = Arc<std::sync::Mutex<HashMap<KeyId, Arc<tokio::sync::Mutex<Closing>>>>>;

/// A held advisory lock on one key: the session that holds it (which the
/// key's reads and writes use meanwhile), unlocked and returned to the pool
/// when dropped, or closed if that cannot be done, which releases the lock
/// too. The unlock is queued on the session after whatever was sent on it.
struct AdvisoryLock {
    slot: Arc<tokio::sync::Mutex<Closing>>,
    held: Held,
    key_id: KeyId,
    object: i32,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        {
            let mut held = self
                .held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if held
                .get(&self.key_id)
                .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
            {
                held.remove(&self.key_id);
            }
        }
        let (slot, object) = (Arc::clone(&self.slot), self.object);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // If this task never runs (the runtime is shutting down),
                // the slot's `Closing` closes the session when the last
                // reference goes: never back to the pool still locked.
                runtime.spawn(async move {
                    let conn = std::mem::replace(&mut *slot.lock().await, Closing(None));
                    let Some(session) = conn.0.as_ref() else {
                        return;
                    };
                    let unlocked = tokio::time::timeout(
                        Duration::from_secs(5),
                        session.execute("SELECT pg_advisory_unlock($1, $2)", &[&LOCK_KEY, &object]),
                    )
                    .await;
                    if matches!(unlocked, Ok(Ok(_))) {
                        conn.done();
                    }
                });
            }
            Err(_) => {
                // No runtime to unlock on: closing the session releases
                // the lock (now, or when the last reference goes).
                if let Ok(mut conn) = slot.try_lock() {
                    drop(std::mem::replace(&mut *conn, Closing(None)));
                }
            }
        }
    }
}

/// Until the health probe finds the database unreachable (forever if the
/// probe stopped: then only the timeouts apply).
async fn until_down(down: &mut tokio::sync::watch::Receiver<bool>) {
    if down.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The error of a call made or given up while the database does not
/// answer the health probe.
fn unreachable(what: impl std::fmt::Display) -> Error {
    failed(
        format!("{what}: the database is unreachable (it does not answer the health probe)"),
        None,
    )
}

/// The health probe: every `every`, `SELECT 1` on a session of its own
/// (connected as the pool's sessions are, so after a failover it finds
/// the new primary), answered within `timeout` or the database counts as
/// unreachable (`true` on `down`) until a probe is answered again.
async fn probe(
    config: Config,
    tls: MakeRustlsConnect,
    down: tokio::sync::watch::Sender<bool>,
    every: Duration,
    timeout: Duration,
    connect_timeout: Duration,
) {
    let every = every.max(Duration::from_millis(10));
    let timeout = timeout.max(Duration::from_millis(10));
    let mut session: Option<LeadSession> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Probes in a row not answered in time: one may be a hiccup (a busy
    // database, a starved runtime), two are not.
    let mut late = 0u32;
    loop {
        tick.tick().await;
        if session.as_ref().is_some_and(|s| s.driver.is_finished()) {
            session = None;
        }
        let mut why = None;
        if session.is_none() {
            match tokio::time::timeout(connect_timeout, config.connect(tls.clone())).await {
                Ok(Ok((client, connection))) => {
                    session = Some(LeadSession {
                        client: Arc::new(client),
                        driver: tokio::spawn(async move {
                            let _ = connection.await;
                        }),
                    });
                }
                Ok(Err(e)) => why = Some(e.to_string()),
                Err(_) => why = Some(format!("no connection within {connect_timeout:?}")),
            }
        }
        if let Some(s) = &session {
            match tokio::time::timeout(timeout, s.client.simple_query("SELECT 1")).await {
                Ok(Ok(_)) => late = 0,
                Ok(Err(e)) => {
                    // A session that failed is not trusted again.
                    why = Some(e.to_string());
                    session = None;
                }
                Err(_) => {
                    // Kept: the answer may still come.
                    late += 1;
                    if late >= 2 {
                        why = Some(format!(
                            "{late} probes in a row not answered within {timeout:?}"
                        ));
                    }
                }
            }
        }
        if late >= 4 {
            // Still silent: try a new session (after a failover the
            // primary is elsewhere).
            session = None;
            late = 2;
        }
        let is_down = why.is_some();
        if down.send_replace(is_down) != is_down {
            match why {
                Some(why) => tracing::warn!(
                    target: "keyserver::storage",
                    "postgres: the database is unreachable ({why}): calls fail at once until it answers"
                ),
                None => tracing::info!(
                    target: "keyserver::storage",
                    "postgres: the database answers again"
                ),
            }
        }
    }
}

/// A new server id: 128 bits from the OS's CSPRNG, in hex.
fn server_id() -> Result<String> {
    let mut id = [0u8; 16];
    // The same provider as the TLS connections (see `tls_config`).
    #[allow(deprecated)]
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut id)
        .map_err(|_| failed("no random bytes for the server id", None))?;
    Ok(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// The advisory lock object of a key: its first four bytes (two keys that
/// share them only wait for each other).
fn lock_object(key_id: &KeyId) -> i32 {
    let b = key_id.as_bytes();
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[async_trait]
impl KeyStorage for PostgresStorage {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn put(&self, record: &WrappedDek) -> Result<()> {
        let id = record.key_id().as_bytes().to_vec();
        let bytes = record.encode();
        let inserted = self
            .with_key(Some(record.key_id()), "storing a record", |c| {
                Box::pin(async move {
                    c.execute(
                        "INSERT INTO keyserver_records (key_id, record) VALUES ($1, $2)
                         ON CONFLICT (key_id) DO NOTHING",
                        &[&id, &bytes],
                    )
                    .await
                })
            })
            .await?;
        if inserted == 0 {
            return Err(Error::AlreadyExists {
                key_id: *record.key_id(),
            });
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn replace(&self, record: &WrappedDek) -> Result<()> {
        // One UPDATE: atomic, and it changes nothing if the key was
        // destroyed meanwhile (a destroyed key is never brought back).
        let id = record.key_id().as_bytes().to_vec();
        let bytes = record.encode();
        let updated = self
            .with_key(Some(record.key_id()), "replacing a record", |c| {
                Box::pin(async move {
                    c.execute(
                        "UPDATE keyserver_records SET record = $2 WHERE key_id = $1",
                        &[&id, &bytes],
                    )
                    .await
                })
            })
            .await?;
        if updated == 0 {
            return Err(Error::NotFound {
                key_id: *record.key_id(),
            });
        }
        Ok(())
    }

    async fn get(&self, key_id: &KeyId) -> Result<WrappedDek> {
        let sql = "SELECT record FROM keyserver_records WHERE key_id = $1";
        match self.read_blob(key_id, "reading a record", sql).await? {
            Some(bytes) => WrappedDek::decode(&bytes, key_id),
            None => Err(Error::NotFound { key_id: *key_id }),
        }
    }

    async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        let id = key_id.as_bytes().to_vec();
        self.with_key(Some(key_id), "looking up a record", |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached("SELECT 1 FROM keyserver_records WHERE key_id = $1")
                    .await?;
                Ok(c.query_opt(&stmt, &[&id]).await?.is_some())
            })
        })
        .await
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    async fn delete(&self, key_id: &KeyId) -> Result<bool> {
        let id = key_id.as_bytes().to_vec();
        let deleted = self
            .with_key(Some(key_id), "deleting a record", |c| {
                Box::pin(async move {
                    c.execute("DELETE FROM keyserver_records WHERE key_id = $1", &[&id])
                        .await
                })
            })
            .await?;
        if deleted > 0 {
            // Saturating: another server's put may not be counted here yet.
            let _ = self
                .count
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        Ok(deleted > 0)
    }

    async fn list(&self) -> Result<Vec<KeyId>> {
        let rows = self
            .with_conn("listing the records", |c| {
                Box::pin(async move {
                    c.query("SELECT key_id FROM keyserver_records ORDER BY key_id", &[])
                        .await
                })
            })
            .await?;
        rows.iter().map(|r| key_id_of(r.get(0))).collect()
    }

    fn keeps_lifecycle(&self) -> bool {
        true
    }

    async fn get_meta(&self, key_id: &KeyId) -> Result<Option<KeyMeta>> {
        let sql = "SELECT meta FROM keyserver_meta WHERE key_id = $1";
        self.read_blob(key_id, "reading key metadata", sql)
            .await?
            .map(|bytes| KeyMeta::decode(&bytes, key_id))
            .transpose()
    }

    /// One query, one round trip, one snapshot: the key id joined to its
    /// record and its metadata (each may be absent).
    async fn get_with_meta(&self, key_id: &KeyId) -> Result<(Option<WrappedDek>, Option<KeyMeta>)> {
        let id = key_id.as_bytes().to_vec();
        let (record, meta): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .with_key(Some(key_id), "reading a record and its metadata", |c| {
                Box::pin(async move {
                    let stmt = c
                        .prepare_cached(
                            "SELECT r.record, m.meta FROM (SELECT $1::bytea AS key_id) k
                             LEFT JOIN keyserver_records r ON r.key_id = k.key_id
                             LEFT JOIN keyserver_meta m ON m.key_id = k.key_id",
                        )
                        .await?;
                    let row = c.query_one(&stmt, &[&id]).await?;
                    Ok((row.get(0), row.get(1)))
                })
            })
            .await?;
        let record = record
            .map(|bytes| WrappedDek::decode(&bytes, key_id))
            .transpose()?;
        let meta = meta
            .map(|bytes| KeyMeta::decode(&bytes, key_id))
            .transpose()?;
        Ok((record, meta))
    }

    async fn put_meta(&self, meta: &KeyMeta) -> Result<()> {
        let id = meta.key_id.as_bytes().to_vec();
        let bytes = meta.encode();
        self.with_key(Some(&meta.key_id), "writing key metadata", |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO keyserver_meta (key_id, meta) VALUES ($1, $2)
                     ON CONFLICT (key_id) DO UPDATE SET meta = EXCLUDED.meta",
                    &[&id, &bytes],
                )
                .await
            })
        })
        .await?;
        Ok(())
    }

    async fn list_all(&self) -> Result<Vec<KeyId>> {
        let rows = self
            .with_conn("listing the keys", |c| {
                Box::pin(async move {
                    c.query(
                        "SELECT key_id FROM keyserver_records
                         UNION SELECT key_id FROM keyserver_meta ORDER BY 1",
                        &[],
                    )
                    .await
                })
            })
            .await?;
        rows.iter().map(|r| key_id_of(r.get(0))).collect()
    }

    async fn put_new<'m>(
        &self,
        record: &WrappedDek,
        meta: Option<&'m KeyMeta>,
        max_keys: Option<u64>,
    ) -> Result<()> {
        let id = record.key_id().as_bytes().to_vec();
        let bytes = record.encode();
        let meta_bytes = meta.map(KeyMeta::encode);
        let owner = meta.and_then(|m| m.owner.clone());
        let max = max_keys.map(|m| i64::try_from(m).unwrap_or(i64::MAX));
        let outcome: i32 = self
            .with_key(Some(record.key_id()), "storing a new key", |c| {
                Box::pin(async move {
                    let stmt = c
                        .prepare_cached("SELECT keyserver_put_new($1, $2, $3, $4, $5)")
                        .await?;
                    let row = c
                        .query_one(&stmt, &[&id, &bytes, &meta_bytes, &owner, &max])
                        .await?;
                    Ok(row.get(0))
                })
            })
            .await?;
        match outcome {
            0 => {
                self.count.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            1 => Err(Error::NotPermitted),
            2 => Err(Error::AlreadyExists {
                key_id: *record.key_id(),
            }),
            n => Err(failed(
                format!("storing a new key: unexpected outcome {n}"),
                None,
            )),
        }
    }

    fn counts_owners(&self) -> bool {
        true
    }

    async fn due_keys(
        &self,
        now: u64,
        after: Option<(u64, KeyId)>,
        limit: u32,
    ) -> Result<Option<Vec<(u64, KeyId)>>> {
        let clamp = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
        let now = clamp(now);
        let (after_at, after_id) = match after {
            Some((at, id)) => (clamp(at), id.as_bytes().to_vec()),
            None => (i64::MIN, Vec::new()),
        };
        let limit = i64::from(limit);
        let rows = self
            .with_conn("reading the due keys", |c| {
                Box::pin(async move {
                    let stmt = c
                        .prepare_cached(
                            "SELECT sweep_at, key_id FROM keyserver_meta
                             WHERE sweep_at <= $1 AND (sweep_at, key_id) > ($2, $3)
                             ORDER BY sweep_at, key_id LIMIT $4",
                        )
                        .await?;
                    c.query(&stmt, &[&now, &after_at, &after_id, &limit]).await
                })
            })
            .await?;
        rows.iter()
            .map(|r| {
                let at: i64 = r.get(0);
                Ok((u64::try_from(at).unwrap_or(0), key_id_of(r.get(1))?))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    async fn list_page(&self, after: Option<KeyId>, limit: u32) -> Result<Vec<KeyId>> {
        let after = after.map_or_else(Vec::new, |id| id.as_bytes().to_vec());
        let limit = i64::from(limit);
        let rows = self
            .with_conn("listing the keys", |c| {
                Box::pin(async move {
                    let stmt = c
                        .prepare_cached(
                            "SELECT key_id FROM (
                                 (SELECT key_id FROM keyserver_records WHERE key_id > $1
                                  ORDER BY key_id LIMIT $2)
                                 UNION
                                 (SELECT key_id FROM keyserver_meta WHERE key_id > $1
                                  ORDER BY key_id LIMIT $2)
                             ) k ORDER BY key_id LIMIT $2",
                        )
                        .await?;
                    c.query(&stmt, &[&after, &limit]).await
                })
            })
            .await?;
        rows.iter().map(|r| key_id_of(r.get(0))).collect()
    }

    async fn list_owned(
        &self,
        owner: &str,
        after: Option<KeyId>,
        limit: u32,
    ) -> Result<Option<Vec<KeyId>>> {
        let owner = owner.to_owned();
        let after = after.map_or_else(Vec::new, |id| id.as_bytes().to_vec());
        let limit = i64::from(limit);
        let rows = self
            .with_conn("listing an owner's keys", |c| {
                Box::pin(async move {
                    let stmt = c
                        .prepare_cached(
                            "SELECT key_id FROM keyserver_meta
                             WHERE owner = $1 AND key_id > $2 ORDER BY key_id LIMIT $3",
                        )
                        .await?;
                    c.query(&stmt, &[&owner, &after, &limit]).await
                })
            })
            .await?;
        rows.iter()
            .map(|r| key_id_of(r.get(0)))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn reachable(&self) -> bool {
        !*self.down.borrow()
    }

    async fn check_in(&self) -> Result<u32> {
        let me = self.server_id.clone();
        let others: i64 = self
            .with_conn("checking in", |c| {
                Box::pin(async move {
                    let stmt = c
                        // A check-in counts for 15 s: three periods of the
                        // `keyserver` command's check-ins (5 s).
                        .prepare_cached("SELECT keyserver_check_in($1)")
                        .await?;
                    Ok(c.query_one(&stmt, &[&me]).await?.get(0))
                })
            })
            .await?;
        Ok(u32::try_from(others).unwrap_or(u32::MAX - 1) + 1)
    }

    async fn try_lead(&self) -> Result<Option<Box<dyn Lease>>> {
        // A session of its own, outside the pool: the lock lives as long
        // as it does. Against a primary only (target_session_attrs in the
        // URL): after a failover the old session is gone, and so the lead.
        // A follower keeps its session between tries.
        let mut follower = self.follower.lock().await;
        let mut kept = follower.take().filter(|s| !s.driver.is_finished());
        let (session, taken) = loop {
            // A kept session may have died since (its end not yet seen):
            // then once more on a new one.
            let reused = kept.is_some();
            let session = match kept.take() {
                Some(session) => session,
                None => self.lead_session().await?,
            };
            let tried = tokio::time::timeout(
                self.options.timeout,
                session
                    .client
                    .query_one("SELECT pg_try_advisory_lock($1, 0)", &[&LOCK_SWEEP]),
            )
            .await;
            match tried {
                Ok(Ok(row)) => break (session, row),
                _ if reused => continue,
                Ok(Err(e)) => return Err(failed("taking the lead", Some(e))),
                Err(_) => return Err(failed("taking the lead: timed out", None)),
            }
        };
        if !taken.get::<_, bool>(0) {
            *follower = Some(session);
            return Ok(None);
        }
        // The lead's own heartbeat: its session is never idle while this
        // process lives (however long a sweep takes), and the first failed
        // beat marks it lost.
        let alive = Arc::new(AtomicBool::new(true));
        let heartbeat = {
            let (client, alive, timeout) = (
                Arc::clone(&session.client),
                Arc::clone(&alive),
                self.options.timeout,
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LEASE_HEARTBEAT).await;
                    let beat = tokio::time::timeout(timeout, client.simple_query("SELECT 1")).await;
                    if !matches!(beat, Ok(Ok(_))) {
                        alive.store(false, Ordering::Relaxed);
                        return;
                    }
                }
            })
        };
        Ok(Some(Box::new(PgLease {
            session,
            alive,
            heartbeat,
        })))
    }

    async fn lock_key(&self, key_id: &KeyId) -> Result<KeyLock> {
        // Closed unless the lock is granted and handed over: a request
        // given up (timed out, or this future dropped) may still be granted
        // later, and only closing the session makes sure nobody holds it.
        if *self.down.borrow() {
            return Err(unreachable("locking a key"));
        }
        let mut down = self.down.clone();
        let conn = tokio::select! {
            biased;
            conn = self.conn() => Closing(Some(conn?)),
            () = until_down(&mut down) => return Err(unreachable("locking a key")),
        };
        let object = lock_object(key_id);
        // Tried, not waited for in the database: a request given up leaves
        // no backend queued for the lock (a closed session's backend runs
        // what it was sent before it notices).
        let trying = tokio::time::timeout(self.options.timeout, async {
            loop {
                let row = conn
                    .get()
                    .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_KEY, &object])
                    .await?;
                if row.get::<_, bool>(0) {
                    return Ok::<(), tokio_postgres::Error>(());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let locked = tokio::select! {
            biased;
            locked = trying => locked,
            // The session is closed (never pooled) when `conn` goes: a
            // grant that comes later dies with it.
            () = until_down(&mut down) => return Err(unreachable("locking a key")),
        };
        match locked {
            Ok(Ok(())) => {
                let slot = Arc::new(tokio::sync::Mutex::new(conn));
                self.held
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(*key_id, Arc::clone(&slot));
                Ok(KeyLock::new(AdvisoryLock {
                    slot,
                    held: Arc::clone(&self.held),
                    key_id: *key_id,
                    object,
                }))
            }
            Ok(Err(e)) => Err(failed("locking a key", Some(e))),
            Err(_) => Err(failed(
                format!(
                    "locking a key: not granted within {:?} (another server holds it)",
                    self.options.timeout
                ),
                None,
            )),
        }
    }
}

/// The lead of the scheduled destructions: a session of its own holding
/// the advisory lock `LOCK_SWEEP`, kept talking by a heartbeat every
/// `LEASE_HEARTBEAT`. Dropped, the session closes and the lock goes with
/// it; if this process dies, its connection closes and the database
/// releases the lock at once; if it is cut off, the database ends the
/// silent session after `LEASE_IDLE_TIMEOUT`. Needs a direct connection or
/// session pooling: a transaction-pooling proxy cannot hold a session lock.
struct PgLease {
    session: LeadSession,
    alive: Arc<AtomicBool>,
    heartbeat: tokio::task::JoinHandle<()>,
}

#[async_trait]
impl Lease for PgLease {
    async fn held(&self) -> bool {
        self.alive.load(Ordering::Relaxed) && !self.session.driver.is_finished()
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        // The session (and with it the lock) goes when `session` drops.
        self.heartbeat.abort();
    }
}

/// A key id column.
fn key_id_of(bytes: &[u8]) -> Result<KeyId> {
    <[u8; 32]>::try_from(bytes)
        .map(KeyId::from_bytes)
        .map_err(|_| failed("a key id in the database is not 32 bytes", None))
}
