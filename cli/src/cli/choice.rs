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
/// keeping `cache_records` verified records in memory.
pub(crate) async fn storage(
    spec: &str,
    cache_records: usize,
) -> Result<Arc<dyn KeyStorage>, Failure> {
    if spec == "memory" {
        return Ok(Arc::new(backends::MemoryStorage::new()));
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let store = backends::PostgresStorage::connect(spec).await?;
        // Other servers change the database: the cache forgets what they
        // announce (LISTEN/NOTIFY), keeps nothing while it cannot hear
        // them, and serves nothing older than POSTGRES_CACHE_TTL whatever
        // happens (the bound docs/OPERATIONS.md gives).
        let cache =
            Arc::new(backends::RecordCache::new(store, cache_records).with_ttl(POSTGRES_CACHE_TTL));
        let follower = Arc::clone(&cache);
        // Runs for the life of the process.
        drop(cache.inner().watch(move |feed| feed.apply_to(&follower)));
        return Ok(cache);
    }
    match spec.strip_prefix("file:") {
        Some(dir) if !dir.is_empty() => {
            let store = backends::FileStorage::open(dir).await?;
            // The directory lock makes this process the only writer: what
            // the record cache needs.
            Ok(Arc::new(backends::RecordCache::new(store, cache_records)))
        }
        _ => Err(usage(format!(
            "--storage: expected \"memory\", \"file:DIR\" or \"postgres://...\", not {:?}",
            redacted(spec)
        ))),
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
