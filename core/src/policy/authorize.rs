//! The authorization layer: who may call what. Principals are recognised by
//! a bearer token or a client certificate, each granted a set of methods
//! and strengths, a request rate and a key quota. The policy is read once
//! (by the binary, from a TOML file) and can be replaced while the server
//! runs.
//!
//! [`Authorize`] is a [`KeyService`] around a [`KeyService`]: it answers
//! [`KeyService::authenticate`] for the listener, and admits each call of a
//! [`Caller`] (or refuses it, code 13) before the inner service sees it.
//! Lifecycle changes are left to the lifecycle layer
//! ([`super::LifecyclePermission`]), which knows the holder's exception.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::{Call, Caller, Credentials, Identity, KeyService, Quotas, Reply};
use crate::{Error, KeyId, Result, Strength};

/// One `[[principal]]` of the auth file, as written.
///
/// ```
/// use keyserver::policy::PrincipalSpec;
///
/// let spec: PrincipalSpec = serde_json::from_str(r#"{
///     "name": "app",
///     "token_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
///     "methods": ["generate", "get_key", "status"],
///     "strengths": [128]
/// }"#).unwrap();
/// assert_eq!(spec.name, "app");
/// ```
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSpec {
    /// The principal's name (in logs; `anonymous` is the one for callers
    /// without credentials).
    pub name: String,
    /// Lowercase hex SHA-256 of its token (tokens are 256-bit random, so a
    /// plain hash is enough; the token itself is never stored).
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// The wire methods it may call.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The strengths its `generate` may ask for; absent: any the server
    /// offers.
    #[serde(default)]
    pub strengths: Option<Vec<u32>>,
    /// A client certificate subject that identifies it over mutual TLS:
    /// `CN=NAME` (the certificate's common name), or `DNS:NAME`, `URI:NAME`
    /// or `EMAIL:NAME` (one of its subject alternative names).
    #[serde(default)]
    pub tls_subject: Option<String>,
    /// Calls per second it may make (a token bucket holding one second's
    /// worth); absent: no limit.
    #[serde(default)]
    pub rate: Option<f64>,
    /// `generate` calls per second it may make (a token bucket as `rate`);
    /// absent: no limit beyond `rate`.
    #[serde(default)]
    pub generate_rate: Option<f64>,
    /// Live keys it may own (made by `generate` or `rotate` and not
    /// destroyed); absent: no limit.
    #[serde(default)]
    pub max_keys: Option<u64>,
}

/// The auth file: a list of principals.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// The principals, `[[principal]]` in TOML.
    #[serde(default, rename = "principal")]
    pub principals: Vec<PrincipalSpec>,
}

/// The grant that lets a principal read `GET /metrics` from off the
/// loopback interface (it is not a wire method).
pub const METRICS_GRANT: &str = "metrics";

/// A principal: who a caller is, and what it may do.
#[derive(Debug)]
pub struct Principal {
    name: String,
    methods: HashSet<&'static str>,
    strengths: Option<Vec<Strength>>,
    metrics: bool,
    rate: Option<Bucket>,
    generate_rate: Option<Bucket>,
    max_keys: Option<u64>,
}

impl Principal {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it may read `GET /metrics` (granted `metrics`).
    pub fn may_read_metrics(&self) -> bool {
        self.metrics
    }

    /// Takes one call of `call`'s kind from its rate limits.
    ///
    /// # Errors
    /// [`Error::Busy`] when its `rate` (or, for `generate`, its
    /// `generate_rate`) is used up for now.
    ///
    /// `servers` servers share the limits: each takes its share.
    fn spend(&self, call: &Call, servers: u32) -> Result<()> {
        if let Some(bucket) = &self.rate {
            if !bucket.take(servers) {
                return Err(Error::Busy {
                    reason: "this principal's request rate is used up".into(),
                });
            }
        }
        if let (Call::Generate(..), Some(bucket)) = (call, &self.generate_rate) {
            if !bucket.take(servers) {
                return Err(Error::Busy {
                    reason: "this principal's generate rate is used up".into(),
                });
            }
        }
        Ok(())
    }

    /// Whether it is granted the method named `method`.
    pub fn permits_method(&self, method: &str) -> bool {
        self.methods.contains(method)
    }

    /// Whether it is granted `call`'s method (and, for `generate` and
    /// `rotate` with a strength, that strength). `generate` without a
    /// strength is the server's default strength, which the operator chose:
    /// allowed with the method. What a holder of a KEK may do to its own key
    /// without the grant is the lifecycle layer's to decide
    /// ([`super::LifecyclePermission`]).
    pub fn permits(&self, call: &Call) -> bool {
        if !self.methods.contains(call.method().name) {
            return false;
        }
        match (call, &self.strengths) {
            (
                Call::Generate(Some(strength), _) | Call::Rotate(_, Some(strength)),
                Some(allowed),
            ) => allowed.contains(strength),
            _ => true,
        }
    }

    /// Live keys it may own.
    pub fn max_keys(&self) -> Option<u64> {
        self.max_keys
    }
}

/// A checked set of principals.
///
/// ```
/// use keyserver::policy::{AuthFile, AuthPolicy, PrincipalSpec};
///
/// let file = AuthFile { principals: vec![PrincipalSpec {
///     name: "app".into(),
///     token_sha256: Some(AuthPolicy::token_hash("s3cret-token")),
///     methods: vec!["status".into()],
///     ..PrincipalSpec::default()
/// }] };
/// let policy = AuthPolicy::new(&file)?;
/// assert_eq!(policy.principal_for_token("s3cret-token").unwrap().name(), "app");
/// assert!(policy.principal_for_token("guess").is_none());
/// assert_eq!(policy.anonymous().name(), "anonymous");
/// # Ok::<(), keyserver::Error>(())
/// ```
pub struct AuthPolicy {
    by_token: HashMap<[u8; 32], Arc<Principal>>,
    by_subject: HashMap<String, Arc<Principal>>,
    by_name: HashMap<String, Arc<Principal>>,
    anonymous: Arc<Principal>,
}

impl fmt::Debug for AuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthPolicy")
            .field("tokens", &self.by_token.len())
            .field("subjects", &self.by_subject.len())
            .finish_non_exhaustive()
    }
}

/// A token bucket: `rate` tokens a second, holding at most one second's
/// worth (and at least one token), full at the start. Shared by `n`
/// servers, each server's bucket fills at `rate / n` and holds
/// `max(capacity / n, 1)`: over any `t` seconds the servers together admit
/// at most `rate * t + max(rate, n)` calls while they agree on `n`.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    state: std::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        let capacity = rate.max(1.0);
        Bucket {
            rate,
            capacity,
            state: std::sync::Mutex::new((capacity, tokio::time::Instant::now())),
        }
    }

    /// Takes a token if there is one, as one of `share` servers.
    fn take(&self, share: u32) -> bool {
        let share = f64::from(share.max(1));
        let (rate, capacity) = (self.rate / share, (self.capacity / share).max(1.0));
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = tokio::time::Instant::now();
        let (tokens, last) = *state;
        let tokens =
            (tokens + now.saturating_duration_since(last).as_secs_f64() * rate).min(capacity);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

/// The longest principal name, in bytes.
const MAX_NAME: usize = 256;

fn invalid(message: String) -> Error {
    Error::Policy { reason: message }
}

impl AuthPolicy {
    /// The policy of `file`, checked: names unique, token hashes 64
    /// lowercase hex digits and unique, TLS subjects well-formed and unique,
    /// methods, strengths and rates valid. A principal named `anonymous`
    /// (with neither token nor subject) grants callers without credentials;
    /// without one they may call `status` only.
    ///
    /// # Errors
    /// [`Error::Policy`] naming the first thing wrong.
    pub fn new(file: &AuthFile) -> Result<Self> {
        let mut names = HashSet::new();
        let mut by_token = HashMap::new();
        let mut by_subject = HashMap::new();
        let mut by_name = HashMap::new();
        let mut anonymous = None;
        for spec in &file.principals {
            let name = &spec.name;
            if !names.insert(name.clone()) {
                return Err(invalid(format!("principal {name:?} is declared twice")));
            }
            // A name is a key's owner in the storage (an indexed column in
            // PostgreSQL) and a field of every log line: short and printable.
            if name.len() > MAX_NAME || name.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "principal {name:?}: a name is at most {MAX_NAME} bytes, with no control \
                     characters"
                )));
            }
            // Names the logs give callers that are not principals.
            if ["server", "local", "-", "(bad credentials)", ""].contains(&name.as_str()) {
                return Err(invalid(format!(
                    "principal {name:?}: the name is reserved (the logs use it for callers that \
                     are not principals)"
                )));
            }
            let principal = Arc::new(principal(spec)?);
            by_name.insert(name.clone(), Arc::clone(&principal));
            if name == "anonymous" {
                if spec.token_sha256.is_some() || spec.tls_subject.is_some() {
                    return Err(invalid(
                        "the anonymous principal has no token and no TLS subject".into(),
                    ));
                }
                anonymous = Some(principal);
                continue;
            }
            if spec.token_sha256.is_none() && spec.tls_subject.is_none() {
                return Err(invalid(format!(
                    "principal {name:?} has no token_sha256 and no tls_subject"
                )));
            }
            if let Some(hex) = &spec.token_sha256 {
                let hash = parse_hash(hex).ok_or_else(|| {
                    invalid(format!(
                        "principal {name:?}: token_sha256 is 64 lowercase hex digits"
                    ))
                })?;
                if by_token.insert(hash, Arc::clone(&principal)).is_some() {
                    return Err(invalid(format!(
                        "principal {name:?}: its token is another principal's"
                    )));
                }
            }
            if let Some(subject) = &spec.tls_subject {
                let subject = normalise_subject(subject).ok_or_else(|| {
                    invalid(format!(
                        "principal {name:?}: tls_subject is CN=NAME, DNS:NAME, URI:NAME or \
                         EMAIL:NAME"
                    ))
                })?;
                if by_subject.insert(subject, Arc::clone(&principal)).is_some() {
                    return Err(invalid(format!(
                        "principal {name:?}: its TLS subject is another principal's"
                    )));
                }
            }
        }
        let anonymous = match anonymous {
            Some(principal) => principal,
            None => Arc::new(principal(&PrincipalSpec {
                name: "anonymous".into(),
                methods: vec![Call::Status.method().name.into()],
                ..PrincipalSpec::default()
            })?),
        };
        by_name
            .entry(anonymous.name.clone())
            .or_insert_with(|| Arc::clone(&anonymous));
        Ok(AuthPolicy {
            by_token,
            by_subject,
            by_name,
            anonymous,
        })
    }

    /// The principal a client certificate with these identities (see
    /// [`PrincipalSpec::tls_subject`]) stands for; `Err` when they name
    /// two different principals.
    fn principal_for_subjects(&self, subjects: &[String]) -> Result<Option<Arc<Principal>>> {
        let mut found: Option<Arc<Principal>> = None;
        for subject in subjects {
            let Some(normalised) = normalise_subject(subject) else {
                continue;
            };
            if let Some(p) = self.by_subject.get(&normalised) {
                match &found {
                    Some(q) if !Arc::ptr_eq(p, q) => return Err(Error::NotPermitted),
                    _ => found = Some(Arc::clone(p)),
                }
            }
        }
        Ok(found)
    }

    /// The hex SHA-256 of `token`, as the auth file holds it.
    pub fn token_hash(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    /// The principal whose token this is.
    pub fn principal_for_token(&self, token: &str) -> Option<Arc<Principal>> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_token.get(&hash).cloned()
    }

    /// The principal of callers without credentials.
    pub fn anonymous(&self) -> Arc<Principal> {
        Arc::clone(&self.anonymous)
    }
}

/// A principal as `spec` declares it (its credentials are the policy's).
fn principal(spec: &PrincipalSpec) -> Result<Principal> {
    let name = &spec.name;
    let mut methods = HashSet::new();
    let mut metrics = false;
    for m in &spec.methods {
        if m == METRICS_GRANT {
            metrics = true;
            continue;
        }
        let row = crate::api::method(m)
            .ok_or_else(|| invalid(format!("principal {name:?}: unknown method {m:?}")))?;
        methods.insert(row.name);
    }
    let strengths = match &spec.strengths {
        None => None,
        Some(bits) => Some(
            bits.iter()
                .map(|b| Strength::from_bits(*b))
                .collect::<Result<Vec<_>>>()
                .map_err(|e| invalid(format!("principal {name:?}: {e}")))?,
        ),
    };
    let bucket = |field: &str, rate: Option<f64>| match rate {
        None => Ok(None),
        Some(r) if r.is_finite() && r > 0.0 => Ok(Some(Bucket::new(r))),
        Some(_) => Err(invalid(format!(
            "principal {name:?}: {field} is a number of calls per second above 0"
        ))),
    };
    Ok(Principal {
        name: name.clone(),
        methods,
        strengths,
        metrics,
        rate: bucket("rate", spec.rate)?,
        generate_rate: bucket("generate_rate", spec.generate_rate)?,
        max_keys: spec.max_keys,
    })
}

/// `CN=x` as it is; `DNS:x` and `EMAIL:x` lower-cased (those compare
/// without case); `URI:x` as it is. `None` for anything else.
fn normalise_subject(subject: &str) -> Option<String> {
    let subject = subject.trim();
    let (prefix, lower) = [
        ("CN=", false),
        ("DNS:", true),
        ("EMAIL:", true),
        ("URI:", false),
    ]
    .into_iter()
    .find(|(p, _)| {
        subject
            .get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    })?;
    let value = subject[prefix.len()..].trim();
    if value.is_empty() {
        return None;
    }
    Some(if lower {
        format!("{prefix}{}", value.to_ascii_lowercase())
    } else {
        format!("{prefix}{value}")
    })
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// The policy in force, replaceable while the server runs (the binary
/// re-reads its auth file on SIGHUP): every call admitted from then on,
/// including those of requests already authenticated, is held to the new
/// policy under its principal's name (a principal removed is refused).
#[derive(Debug)]
pub struct Auth {
    current: RwLock<Arc<AuthPolicy>>,
    /// How many servers share the principals' rate limits (each takes its
    /// share): 1 unless told ([`Auth::share_limits`]).
    servers: std::sync::atomic::AtomicU32,
}

impl Auth {
    /// Enforces `policy`.
    pub fn new(policy: AuthPolicy) -> Arc<Self> {
        Arc::new(Auth {
            current: RwLock::new(Arc::new(policy)),
            servers: std::sync::atomic::AtomicU32::new(1),
        })
    }

    /// From now on `servers` servers (at least 1) share the principals'
    /// rate limits: each server admits its share, `rate / servers`, so
    /// that together they admit what the policy says (the `keyserver`
    /// command sets it from [`KeyStorage::check_in`](crate::KeyStorage::check_in)
    /// every 5 s).
    ///
    /// ```
    /// use keyserver::policy::{Auth, AuthFile, AuthPolicy};
    ///
    /// let auth = Auth::new(AuthPolicy::new(&AuthFile::default())?);
    /// assert_eq!(auth.servers(), 1);
    /// auth.share_limits(3);
    /// assert_eq!(auth.servers(), 3);
    /// # Ok::<(), keyserver::Error>(())
    /// ```
    pub fn share_limits(&self, servers: u32) {
        self.servers
            .store(servers.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// How many servers share the rate limits.
    pub fn servers(&self) -> u32 {
        self.servers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Enforces `policy` from now on.
    pub fn replace(&self, policy: AuthPolicy) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
    }

    fn policy(&self) -> Arc<AuthPolicy> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The identity of `credentials` under `policy`: a token and a certificate
/// must name the same principal; none at all is the principal `anonymous`.
fn identify(policy: &AuthPolicy, credentials: &Credentials<'_>) -> Identity {
    let Ok(by_cert) = policy.principal_for_subjects(credentials.tls_identities) else {
        return Identity::BadCredentials;
    };
    let principal = match (credentials.token, by_cert) {
        (None, Some(principal)) => principal,
        (None, None) => policy.anonymous(),
        (Some(token), by_cert) => match (policy.principal_for_token(token), by_cert) {
            (Some(p), Some(q)) if !Arc::ptr_eq(&p, &q) => return Identity::BadCredentials,
            (Some(principal), _) => principal,
            (None, _) => return Identity::BadCredentials,
        },
    };
    Identity::Principal(principal.name().to_owned())
}

impl AuthPolicy {
    /// The principal named `name`.
    pub fn principal(&self, name: &str) -> Option<Arc<Principal>> {
        self.by_name.get(name).cloned()
    }
}

impl Quotas for AuthPolicy {
    fn max_keys(&self, owner: &str) -> Option<u64> {
        self.by_name.get(owner).and_then(|p| p.max_keys)
    }
}

impl Auth {
    /// The identity of `credentials` under the policy in force.
    pub fn identify(&self, credentials: &Credentials<'_>) -> Identity {
        identify(&self.policy(), credentials)
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<AuthPolicy> {
        self.policy()
    }
}

/// The authorization layer around `inner` (see the module docs).
///
/// Without a policy (`auth` = `None`) it does no access control, except
/// that an anonymous caller of a listener reachable from other hosts may
/// not list keys (and the lifecycle layer lets it only restrict keys whose
/// KEK it holds).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use keyserver::api::{Call, Caller, Identity};
/// use keyserver::backends::{MemoryStorage, RustCrypto};
/// use keyserver::policy::{Auth, AuthFile, AuthPolicy, Authorize};
/// use keyserver::{KeyServer, KeyService};
///
/// let keys = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
/// let auth = Auth::new(AuthPolicy::new(&AuthFile::default())?);
/// let guarded = Authorize::new(keys, Some(auth));
/// // With an empty policy, a caller without credentials may ask the status only.
/// let anonymous = Caller::with_identity(Identity::Principal("anonymous".into()));
/// assert!(guarded.call_as(&anonymous, Call::Status).await.is_ok());
/// let refused = guarded.call_as(&anonymous, Call::Generate(None, None)).await;
/// assert_eq!(refused.unwrap_err().code(), 13);
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
pub struct Authorize {
    inner: Arc<dyn KeyService>,
    auth: Option<Arc<Auth>>,
}

impl fmt::Debug for Authorize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorize")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Authorize {
    /// `inner`, with calls admitted by `auth` (`None`: no access control).
    pub fn new(inner: Arc<dyn KeyService>, auth: Option<Arc<Auth>>) -> Self {
        Authorize { inner, auth }
    }

    /// `caller` as the inner service sees it, if it may make `call`: its
    /// quota and the policy's table of quotas filled in, its rate spent.
    fn admit<'c>(&self, caller: &'c Caller, call: &Call) -> Result<Cow<'c, Caller>> {
        let Some(auth) = &self.auth else {
            return match (&caller.identity, call) {
                (Identity::BadCredentials, _) => Err(Error::NotPermitted),
                (Identity::Anonymous { remote: true }, Call::ListKeys(_)) => {
                    Err(Error::NotPermitted)
                }
                _ => Ok(Cow::Borrowed(caller)),
            };
        };
        let policy = auth.policy();
        let principal = match &caller.identity {
            // In-process code and the server's own work own the server.
            Identity::Local | Identity::Server => return Ok(Cow::Borrowed(caller)),
            Identity::BadCredentials => return Err(Error::NotPermitted),
            Identity::Anonymous { .. } => policy.anonymous(),
            Identity::Principal(name) => policy.principal(name).ok_or(Error::NotPermitted)?,
        };
        // State changes: the lifecycle layer decides (a KEK's holder may
        // restrict its own key without the grant).
        if !matches!(call, Call::Change(..)) && !principal.permits(call) {
            return Err(Error::NotPermitted);
        }
        principal.spend(call, auth.servers())?;
        let mut admitted = caller.clone();
        admitted.identity = Identity::Principal(principal.name().to_owned());
        // Whatever the caller said, its lifecycle right is the lifecycle
        // layer's to give: never more than restricting its own keys here.
        admitted.lifecycle = crate::api::LifecycleRight::RestrictOnly;
        admitted.max_keys = principal.max_keys();
        admitted.quotas = Some(policy as Arc<dyn Quotas>);
        Ok(Cow::Owned(admitted))
    }
}

super::layer! {
    Authorize,

    async fn call_as(&self, caller: &Caller, call: Call) -> Result<Reply> {
        let admitted = self.admit(caller, &call)?;
        self.inner.call_as(&admitted, call).await
    }
}

#[async_trait::async_trait]
impl super::Layer for Authorize {
    fn inner(&self) -> &dyn KeyService {
        &*self.inner
    }

    fn authenticate(&self, credentials: &Credentials<'_>) -> Option<Identity> {
        match &self.auth {
            Some(auth) => Some(auth.identify(credentials)),
            None => self.inner.authenticate(credentials),
        }
    }

    fn may_read_metrics(&self, caller: &Caller) -> bool {
        if caller.peer.is_some_and(|p| p.ip().is_loopback()) {
            return true;
        }
        let (Some(auth), Identity::Principal(name)) = (&self.auth, &caller.identity) else {
            return false;
        };
        auth.policy()
            .principal(name)
            .is_some_and(|p| p.may_read_metrics())
    }

    async fn sweep(&self, caller: &Caller) -> Result<Vec<KeyId>> {
        match caller.identity {
            Identity::Server | Identity::Local => self.inner.sweep(caller).await,
            _ => Err(Error::NotPermitted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, token: Option<&str>, methods: &[&str]) -> PrincipalSpec {
        PrincipalSpec {
            name: name.into(),
            token_sha256: token.map(AuthPolicy::token_hash),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            ..PrincipalSpec::default()
        }
    }

    /// Shared by three servers, a bucket of 30 a second admits 10 a second
    /// here (and holds 10): the three together admit the policy's rate.
    #[tokio::test(start_paused = true)]
    async fn a_shared_bucket_admits_its_share() {
        let bucket = Bucket::new(30.0);
        let taken = (0..40).filter(|_| bucket.take(3)).count();
        assert_eq!(taken, 10);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert_eq!((0..40).filter(|_| bucket.take(3)).count(), 10);
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        assert_eq!((0..40).filter(|_| bucket.take(3)).count(), 5);
        // Alone again: the whole rate (and a full second's burst).
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert_eq!((0..40).filter(|_| bucket.take(1)).count(), 30);
        // A share below one token a second still holds one token.
        let slow = Bucket::new(2.0);
        assert_eq!((0..5).filter(|_| slow.take(8)).count(), 1);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases = [
            (
                vec![spec("a", Some("t"), &[]), spec("a", Some("u"), &[])],
                "twice",
            ),
            (vec![spec("a", Some("t"), &["nope"])], "unknown method"),
            (vec![spec("a", None, &[])], "no token_sha256"),
            (vec![spec("anonymous", Some("t"), &[])], "has no token"),
            (vec![spec("a", Some("t"), &["metrix"])], "unknown method"),
            (
                vec![spec(&"n".repeat(257), Some("t"), &[])],
                "at most 256 bytes",
            ),
            (vec![spec("a\0b", Some("t"), &[])], "no control characters"),
            (vec![spec("a\nb", Some("t"), &[])], "no control characters"),
            (
                vec![spec("a", Some("t"), &[]), spec("b", Some("t"), &[])],
                "another principal",
            ),
        ];
        for (principals, needle) in cases {
            let err = AuthPolicy::new(&AuthFile { principals }).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        let mut bad = spec("a", Some("t"), &[]);
        bad.token_sha256 = Some("AB".repeat(32));
        assert!(AuthPolicy::new(&AuthFile {
            principals: vec![bad]
        })
        .is_err());
        let mut bad = spec("a", Some("t"), &[]);
        bad.strengths = Some(vec![100]);
        assert!(AuthPolicy::new(&AuthFile {
            principals: vec![bad]
        })
        .is_err());
    }

    fn layer(auth: &Arc<Auth>) -> Authorize {
        Authorize::new(
            Arc::new(crate::api::MockKeyService::new()),
            Some(Arc::clone(auth)),
        )
    }

    fn caller_of(layer: &Authorize, token: Option<&str>) -> Caller {
        let identity = layer
            .authenticate(&Credentials::new(token, &[]))
            .expect("a policy authenticates");
        Caller::with_identity(identity)
    }

    #[test]
    fn credentials_and_permissions() {
        let mut app = spec("app", Some("app-token"), &["generate", "status"]);
        app.strengths = Some(vec![128]);
        let policy = AuthPolicy::new(&AuthFile {
            principals: vec![app],
        })
        .unwrap();
        let auth = Auth::new(policy);
        let layer = layer(&auth);
        let caller = caller_of(&layer, Some("app-token"));
        assert_eq!(caller.name(), "app");
        assert!(layer.admit(&caller, &Call::Status).is_ok());
        assert!(layer.admit(&caller, &Call::Generate(None, None)).is_ok());
        assert!(layer
            .admit(&caller, &Call::Generate(Some(Strength::S128), None))
            .is_ok());
        let no = layer
            .admit(&caller, &Call::Generate(Some(Strength::S256), None))
            .unwrap_err();
        assert_eq!(no.code(), 13);
        assert!(layer
            .admit(&caller, &Call::Contains(crate::KeyId::from_bytes([0; 32])))
            .is_err());
        // No credentials: anonymous, status only. Bad ones: nothing.
        let anonymous = caller_of(&layer, None);
        assert_eq!(anonymous.name(), "anonymous");
        assert!(layer.admit(&anonymous, &Call::Status).is_ok());
        assert!(layer
            .admit(&anonymous, &Call::Generate(None, None))
            .is_err());
        for bad in ["guess", ""] {
            let caller = caller_of(&layer, Some(bad));
            assert_eq!(caller.identity, Identity::BadCredentials);
            assert!(layer.admit(&caller, &Call::Status).is_err(), "{bad}");
        }
        // Without a policy, anyone may do anything.
        let open = Authorize::new(Arc::new(crate::api::MockKeyService::new()), None);
        let local = Caller::with_identity(Identity::Anonymous { remote: false });
        assert!(open.admit(&local, &Call::Generate(None, None)).is_ok());
        // A new policy takes effect for the next request.
        auth.replace(AuthPolicy::new(&AuthFile::default()).unwrap());
        let caller = caller_of(&layer, Some("app-token"));
        assert!(layer.admit(&caller, &Call::Status).is_err(), "revoked");
        // A caller authenticated before the change is held to the new policy.
        let before = Caller::with_identity(Identity::Principal("app".into()));
        assert!(layer.admit(&before, &Call::Status).is_err(), "revoked");
    }

    #[test]
    fn loopback_or_the_metrics_grant() {
        let spec = |name: &str, token: &str, methods: &[&str]| PrincipalSpec {
            name: name.into(),
            token_sha256: Some(AuthPolicy::token_hash(token)),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            ..PrincipalSpec::default()
        };
        let auth = Auth::new(
            AuthPolicy::new(&AuthFile {
                principals: vec![
                    spec("mon", "mon-token", &["metrics"]),
                    spec("app", "app-token", &["status"]),
                ],
            })
            .unwrap(),
        );
        let layer = layer(&auth);
        let from = |peer: &str, token: Option<&str>| {
            caller_of(&layer, token).from_peer(Some(peer.parse().unwrap()), "jsonrpc")
        };
        assert!(layer.may_read_metrics(&from("127.0.0.1:1", None)));
        assert!(layer.may_read_metrics(&from("[::1]:1", Some("app-token"))));
        assert!(!layer.may_read_metrics(&from("10.0.0.5:1", None)));
        assert!(!layer.may_read_metrics(&from("10.0.0.5:1", Some("app-token"))));
        assert!(!layer.may_read_metrics(&from("10.0.0.5:1", Some("guess"))));
        assert!(layer.may_read_metrics(&from("10.0.0.5:1", Some("mon-token"))));
    }
}
