//! Who may do what: principals recognised by a bearer token, each granted a
//! set of methods and strengths. The policy is read once (by the binary,
//! from a TOML file) and can be replaced while the server runs.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::Call;
use crate::{Error, Result, Strength};

/// One `[[principal]]` of the auth file, as written.
///
/// ```
/// use keyserver::transports::PrincipalSpec;
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
    fn spend(&self, call: &Call) -> Result<()> {
        if let Some(bucket) = &self.rate {
            if !bucket.take() {
                return Err(Error::Busy {
                    reason: "this principal's request rate is used up".into(),
                });
            }
        }
        if let (Call::Generate(..), Some(bucket)) = (call, &self.generate_rate) {
            if !bucket.take() {
                return Err(Error::Busy {
                    reason: "this principal's generate rate is used up".into(),
                });
            }
        }
        Ok(())
    }

    /// Whether it may make `call`. `generate` without a strength is the
    /// server's default strength, which the operator chose: allowed with the
    /// method. A restrictive state change (`suspend`, `compromised`,
    /// `destroy`) whose target is the KEK itself is always allowed (the KEK
    /// is proof of possession: its holder may always take its own key out
    /// of use); undoing one (`resume`, `cancel_destroy`), and any change by
    /// key id, needs the method: a thief holding only a stolen KEK cannot
    /// undo an operator's suspension.
    pub fn permits(&self, call: &Call) -> bool {
        if let Call::Change(change, crate::Target::Kek(_)) = call {
            if change.restricts() {
                return true;
            }
        }
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
/// use keyserver::transports::{AuthFile, AuthPolicy, PrincipalSpec};
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
/// worth (and at least one token), full at the start.
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

    /// Takes a token if there is one.
    fn take(&self) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = tokio::time::Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate)
            .min(self.capacity);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

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
        let mut anonymous = None;
        for spec in &file.principals {
            let name = &spec.name;
            if !names.insert(name.clone()) {
                return Err(invalid(format!("principal {name:?} is declared twice")));
            }
            let principal = Arc::new(principal(spec)?);
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
        Ok(AuthPolicy {
            by_token,
            by_subject,
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

/// The policy a listener enforces, replaceable while it runs (the binary
/// re-reads its auth file on SIGHUP): requests already authenticated keep
/// the principal they had; the next ones see the new policy.
#[derive(Debug)]
pub struct Auth {
    current: RwLock<Arc<AuthPolicy>>,
}

impl Auth {
    /// Enforces `policy`.
    pub fn new(policy: AuthPolicy) -> Arc<Self> {
        Arc::new(Auth {
            current: RwLock::new(Arc::new(policy)),
        })
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

tokio::task_local! {
    /// The request being served: who calls, from where (set by the request
    /// middleware around the handler; read by the dispatcher and the logs).
    pub(crate) static REQUEST: RequestContext;
}

/// Who sent the request being served, and from where.
#[derive(Clone, Debug)]
pub(crate) struct RequestContext {
    /// The caller under the policy.
    pub(crate) caller: Caller,
    /// The peer's address.
    pub(crate) peer: Option<std::net::SocketAddr>,
    /// The client certificate of its connection, if any.
    pub(crate) cert: super::peer::PeerCert,
    /// Where its calls are recorded, if anywhere.
    pub(crate) audit: Option<Arc<super::audit::AuditLog>>,
    /// Where its calls are counted.
    pub(crate) metrics: Option<Arc<super::metrics::Metrics>>,
}

impl RequestContext {
    /// Whether this request may read `/metrics`: from the loopback
    /// interface, or by a principal granted `metrics`.
    pub(crate) fn may_scrape(&self) -> bool {
        self.peer.is_some_and(|p| p.ip().is_loopback()) || self.caller.may_read_metrics()
    }
}

/// The request this task serves (anyone, from nowhere, outside one).
pub(crate) fn current_request() -> RequestContext {
    REQUEST
        .try_with(RequestContext::clone)
        .unwrap_or(RequestContext {
            caller: Caller::Anyone,
            peer: None,
            cert: super::peer::PeerCert::default(),
            audit: None,
            metrics: None,
        })
}

/// Who is calling, as the request middleware found out.
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    /// No policy: every caller may do everything (a loopback listener
    /// without `--auth`, for development).
    Anyone,
    /// Authenticated (or anonymous) under the policy.
    Principal(Arc<Principal>),
    /// Credentials were given and are not valid: nothing is permitted.
    Refused,
    /// No policy on a listener off loopback (client certificates or
    /// `insecure` let it start): the wire API as before access control, but
    /// no operator methods (state changes by key id, `list_keys`), which
    /// only an auth file can grant there.
    AnyoneRemote,
}

impl Caller {
    /// The caller of a request with these headers, over a connection whose
    /// client certificate has these identities (`CN=..`, `DNS:..`, ...;
    /// none without mutual TLS), under `auth`. A token and a certificate
    /// that name different principals are refused.
    pub(crate) fn of(
        auth: Option<&Auth>,
        headers: &axum::http::HeaderMap,
        subjects: &[String],
    ) -> Caller {
        let Some(auth) = auth else {
            return Caller::Anyone;
        };
        let policy = auth.policy();
        let Ok(by_cert) = policy.principal_for_subjects(subjects) else {
            return Caller::Refused;
        };
        match (bearer_or_basic(headers), by_cert) {
            (None, Some(principal)) => Caller::Principal(principal),
            (None, None) => Caller::Principal(policy.anonymous()),
            (Some(token), by_cert) => match (policy.principal_for_token(&token), by_cert) {
                (Some(p), Some(q)) if !Arc::ptr_eq(&p, &q) => Caller::Refused,
                (Some(principal), _) => Caller::Principal(principal),
                (None, _) => Caller::Refused,
            },
        }
    }

    /// Whether this caller may make `call` now: permitted (else
    /// [`Error::NotPermitted`]), and within its rate limits (else
    /// [`Error::Busy`]; a call counts against them once permitted).
    pub(crate) fn check(&self, call: &Call) -> Result<()> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::AnyoneRemote => match call {
                Call::Change(change, crate::Target::Kek(_)) if change.restricts() => Ok(()),
                Call::Change(..) | Call::ListKeys(_) => Err(Error::NotPermitted),
                _ => Ok(()),
            },
            Caller::Principal(p) if p.permits(call) => p.spend(call),
            Caller::Principal(_) | Caller::Refused => Err(Error::NotPermitted),
        }
    }

    /// Whether this caller may read `GET /metrics` from off the loopback
    /// interface.
    pub(crate) fn may_read_metrics(&self) -> bool {
        matches!(self, Caller::Principal(p) if p.may_read_metrics())
    }

    /// Who this is for the service: its principal's name and quota.
    pub(crate) fn info(&self) -> crate::api::CallerInfo {
        match self {
            Caller::Principal(p) => {
                crate::api::CallerInfo::new(Some(p.name().to_owned()), p.max_keys())
            }
            Caller::Anyone | Caller::AnyoneRemote | Caller::Refused => {
                crate::api::CallerInfo::default()
            }
        }
    }

    /// The name for the access log.
    pub(crate) fn name(&self) -> &str {
        match self {
            Caller::Anyone | Caller::AnyoneRemote => "-",
            Caller::Principal(p) => p.name(),
            Caller::Refused => "(bad credentials)",
        }
    }
}

/// The token of `Authorization: Bearer TOKEN`, or the password of
/// `Authorization: Basic` (so that `https://name:TOKEN@host/` works from
/// any HTTP client). An `Authorization` header of another form is an
/// empty token, which no principal has.
fn bearer_or_basic(headers: &axum::http::HeaderMap) -> Option<zeroize::Zeroizing<String>> {
    use base64::Engine;
    let value = headers.get(axum::http::header::AUTHORIZATION)?;
    let value = value.to_str().unwrap_or("");
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .unwrap_or_default(),
        );
        std::str::from_utf8(&decoded)
            .ok()
            .and_then(|s| s.split_once(':'))
            .map(|(_, password)| password.to_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Some(zeroize::Zeroizing::new(token))
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

    #[test]
    fn credentials_and_permissions() {
        let mut app = spec("app", Some("app-token"), &["generate", "status"]);
        app.strengths = Some(vec![128]);
        let policy = AuthPolicy::new(&AuthFile {
            principals: vec![app],
        })
        .unwrap();
        let auth = Auth::new(policy);
        let headers = |value: Option<&str>| {
            let mut h = axum::http::HeaderMap::new();
            if let Some(v) = value {
                h.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
            }
            h
        };
        use base64::Engine;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("app:app-token")
        );
        for creds in [Some("Bearer app-token"), Some(basic.as_str())] {
            let caller = Caller::of(Some(&auth), &headers(creds), &[]);
            assert_eq!(caller.name(), "app");
            assert!(caller.check(&Call::Status).is_ok());
            assert!(caller.check(&Call::Generate(None, None)).is_ok());
            assert!(caller
                .check(&Call::Generate(Some(Strength::S128), None))
                .is_ok());
            let no = caller
                .check(&Call::Generate(Some(Strength::S256), None))
                .unwrap_err();
            assert_eq!(no.code(), 13);
            assert!(caller
                .check(&Call::Contains(crate::KeyId::from_bytes([0; 32])))
                .is_err());
        }
        // No credentials: anonymous, status only. Bad ones: nothing.
        let anonymous = Caller::of(Some(&auth), &headers(None), &[]);
        assert!(anonymous.check(&Call::Status).is_ok());
        assert!(anonymous.check(&Call::Generate(None, None)).is_err());
        for bad in ["Bearer guess", "Basic !!", "Token app-token", "Bearer"] {
            let caller = Caller::of(Some(&auth), &headers(Some(bad)), &[]);
            assert!(caller.check(&Call::Status).is_err(), "{bad}");
        }
        // Without a policy, anyone may do anything.
        assert!(Caller::of(None, &headers(None), &[])
            .check(&Call::Generate(None, None))
            .is_ok());
        // A new policy takes effect for the next request.
        auth.replace(AuthPolicy::new(&AuthFile::default()).unwrap());
        let caller = Caller::of(Some(&auth), &headers(Some("Bearer app-token")), &[]);
        assert!(caller.check(&Call::Status).is_err(), "revoked");
    }

    fn request(peer: &str, caller: Caller) -> RequestContext {
        RequestContext {
            caller,
            peer: Some(peer.parse().unwrap()),
            cert: Default::default(),
            audit: None,
            metrics: None,
        }
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
        let as_token = |token: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                axum::http::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
            Caller::of(Some(&auth), &headers, &[])
        };
        assert!(request("127.0.0.1:1", Caller::Anyone).may_scrape());
        assert!(request("[::1]:1", as_token("app-token")).may_scrape());
        assert!(!request("10.0.0.5:1", Caller::AnyoneRemote).may_scrape());
        assert!(!request("10.0.0.5:1", as_token("app-token")).may_scrape());
        assert!(!request("10.0.0.5:1", as_token("guess")).may_scrape());
        assert!(request("10.0.0.5:1", as_token("mon-token")).may_scrape());
    }
}
