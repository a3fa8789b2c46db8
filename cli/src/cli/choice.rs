//! The run-time choice of cipher suite and storage, written once for the
//! server and the client commands.
//!
//! The library composes `KeyServer<C, S>` at compile time; the binary picks
//! among the backends compiled in at run time. It does so with trait objects
//! (a `Box<dyn CipherSuite>` and an `Arc<dyn KeyStorage>` are a suite and a
//! storage), so there is one choice per axis and one server type, rather than
//! a generic function per combination. The cost is one indirect call per
//! primitive, nothing next to an RSA or AES-GCM operation.

use std::sync::Arc;

use keyserver::seal::{Seal, SealedStorage};
use keyserver::{backends, CipherSuite, KeyStorage};

use super::args::SuiteName;
use super::exit::{usage, Failure};

/// The cipher suite named `name`.
pub(crate) fn suite(name: SuiteName) -> Result<Box<dyn CipherSuite>, Failure> {
    match name {
        SuiteName::Rustcrypto => Ok(Box::new(backends::RustCrypto::new())),
        #[cfg(feature = "cipher-openssl")]
        SuiteName::Openssl => Ok(Box::new(backends::OpenSsl::new())),
        #[cfg(not(feature = "cipher-openssl"))]
        SuiteName::Openssl => Err(usage(
            "--suite openssl: this keyserver was built without the cipher-openssl feature",
        )),
        #[cfg(feature = "cipher-awslc")]
        SuiteName::Awslc => Ok(Box::new(backends::AwsLc::new())),
        #[cfg(not(feature = "cipher-awslc"))]
        SuiteName::Awslc => Err(usage(
            "--suite awslc: this keyserver was built without the cipher-awslc feature",
        )),
    }
}

/// The storage `spec` names: `memory`, `file:DIR`, or a PostgreSQL URL,
/// keeping `cache_records` verified records in memory; its records as
/// stored (a copy, a backup, a reseal reads them sealed or not).
pub(crate) async fn storage(
    spec: &str,
    cache_records: usize,
) -> Result<Arc<dyn KeyStorage>, Failure> {
    Ok(stores(spec, cache_records, None).await?.serving)
}

/// The storage `spec` names, to read from only (`backup`, the source of
/// `copy`): a file store is opened as a read-only view beside the server
/// that may hold it, so both run while it serves.
pub(crate) async fn read_storage(spec: &str) -> Result<Arc<dyn KeyStorage>, Failure> {
    match spec.strip_prefix("file:") {
        Some(dir) if !dir.is_empty() => {
            Ok(Arc::new(backends::FileStorage::open_read_only(dir).await?))
        }
        _ => storage(spec, 0).await,
    }
}

/// A storage twice: as the server uses it (through the seal, if any), and
/// as it is stored, records sealed or not, with the record cache (for
/// resealing it in the background: a replaced record is forgotten by the
/// cache, so no old form of it outlives its master key there).
pub(crate) struct Stores {
    pub serving: Arc<dyn KeyStorage>,
    pub raw: Arc<dyn KeyStorage>,
}

/// `backend`, sealed by `seal` if there is one.
fn sealed<S: KeyStorage>(backend: S, seal: Option<Arc<dyn Seal>>) -> Arc<dyn KeyStorage> {
    match seal {
        Some(seal) => Arc::new(SealedStorage::new(backend, seal)),
        None => Arc::new(backend),
    }
}

/// The storage `spec` names, sealed by `seal` if there is one. The record
/// cache sits under the seal and keeps records as stored (sealed): every
/// read goes through the token, so a server whose token is gone (pulled,
/// or its key destroyed) serves nothing more at once.
pub(crate) async fn stores(
    spec: &str,
    cache_records: usize,
    seal: Option<Arc<dyn Seal>>,
) -> Result<Stores, Failure> {
    if spec == "memory" {
        let raw = Arc::new(backends::MemoryStorage::new());
        return Ok(Stores {
            serving: sealed(Arc::clone(&raw), seal),
            raw,
        });
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let store = Arc::new(backends::PostgresStorage::connect(spec).await?);
        // Other servers change the database: the cache forgets what they
        // announce (LISTEN/NOTIFY), keeps nothing while it cannot hear
        // them, and serves nothing older than POSTGRES_CACHE_TTL whatever
        // happens (the bound docs/OPERATIONS.md gives).
        let cache = Arc::new(
            backends::RecordCache::new(Arc::clone(&store), cache_records)
                .with_ttl(POSTGRES_CACHE_TTL),
        );
        let follower = Arc::clone(&cache);
        // Runs for the life of the process.
        drop(store.watch(move |feed| feed.apply_to(&follower)));
        return Ok(Stores {
            serving: sealed(Arc::clone(&cache), seal),
            raw: cache,
        });
    }
    match spec.strip_prefix("file:") {
        Some(dir) if !dir.is_empty() => {
            let store = Arc::new(backends::FileStorage::open(dir).await?);
            // The directory lock makes this process the only writer: what
            // the record cache needs.
            let cache = Arc::new(backends::RecordCache::new(store, cache_records));
            Ok(Stores {
                serving: sealed(Arc::clone(&cache), seal),
                raw: cache,
            })
        }
        _ => Err(usage(format!(
            "--storage: expected \"memory\", \"file:DIR\" or \"postgres://...\", not {:?}",
            redacted(spec)
        ))),
    }
}

/// The master key of the PKCS#11 URI `uri` (`--seal`), opened: the token
/// found, logged in, the key checked.
pub(crate) async fn seal(flag: &str, uri: &str) -> Result<Arc<dyn Seal>, Failure> {
    let uri: backends::Pkcs11Uri = uri
        .parse()
        .map_err(|e: keyserver::Error| usage(format!("{flag}: {e}")))?;
    let opened = tokio::task::spawn_blocking(move || backends::Pkcs11Seal::open(&uri))
        .await
        .map_err(|_| usage(format!("{flag}: opening the token did not complete")))?;
    match opened {
        Ok(seal) => Ok(Arc::new(seal)),
        Err(e) => {
            let mut failure = Failure::from(e);
            failure.message = format!("{flag}: {}", failure.message);
            Err(failure)
        }
    }
}

/// The longest a server serves a record or a key's state from memory when
/// the storage is PostgreSQL, even if it missed another server's change
/// (the listening connection died without a word: its liveness probe every
/// 10 s, within its 5 s time limit, is what notices).
pub(crate) const POSTGRES_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(15);

/// `spec` as it may be shown: a database URL's password replaced by `***`.
pub(crate) fn redacted(spec: &str) -> String {
    let Some((scheme, rest)) = spec.split_once("://") else {
        return spec.to_string();
    };
    // The credentials end at the last `@` (a password may hold `/`, `?` or
    // even an unencoded `@`; an `@` in the query hides a little more than
    // needed, never less).
    let (user, after) = match rest.rfind('@') {
        Some(at) => {
            let user = &rest[..at];
            let shown = match user.split_once(':') {
                Some((name, _)) => format!("{name}:***"),
                None => user.to_string(),
            };
            (shown, &rest[at..])
        }
        None => (String::new(), rest),
    };
    let after = match after.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => after.to_string(),
    };
    format!("{scheme}://{user}{after}")
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn database_passwords_are_never_shown() {
        assert_eq!(
            redacted("postgres://ks:s3cret@db:5432/keys?sslmode=require"),
            "postgres://ks:***@db:5432/keys?sslmode=require"
        );
        assert_eq!(
            redacted("postgresql://ks@db/keys?password=s3cret&sslmode=require"),
            "postgresql://ks@db/keys?password=***&sslmode=require"
        );
        assert_eq!(redacted("postgres://db/keys"), "postgres://db/keys");
        assert_eq!(redacted("file:./data"), "file:./data");
        assert!(!redacted("postgres://a:b:c@h/d").contains("b:c"));
        for secret in ["ab/cd", "a?b", "p@ss", "x/y?z@w"] {
            let shown = redacted(&format!(
                "postgres://ks:{secret}@db:5432/keys?sslmode=require"
            ));
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.ends_with("@db:5432/keys?sslmode=require"), "{shown}");
        }
    }
}
