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
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
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
}

/// The auth file: a list of principals.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// The principals, `[[principal]]` in TOML.
    #[serde(default, rename = "principal")]
    pub principals: Vec<PrincipalSpec>,
}

/// A principal: who a caller is, and what it may do.
#[derive(Debug)]
pub struct Principal {
    name: String,
    methods: HashSet<&'static str>,
    strengths: Option<Vec<Strength>>,
}

impl Principal {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it may make `call`. `generate` without a strength is the
    /// server's default strength, which the operator chose: allowed with the
    /// method.
    pub fn permits(&self, call: &Call) -> bool {
        if !self.methods.contains(call.method().name) {
            return false;
        }
        match (call, &self.strengths) {
            (Call::Generate(Some(strength)), Some(allowed)) => allowed.contains(strength),
            _ => true,
        }
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
///     strengths: None,
/// }] };
/// let policy = AuthPolicy::new(&file)?;
/// assert_eq!(policy.principal_for_token("s3cret-token").unwrap().name(), "app");
/// assert!(policy.principal_for_token("guess").is_none());
/// assert_eq!(policy.anonymous().name(), "anonymous");
/// # Ok::<(), keyserver::Error>(())
/// ```
pub struct AuthPolicy {
    by_token: HashMap<[u8; 32], Arc<Principal>>,
    anonymous: Arc<Principal>,
}

impl fmt::Debug for AuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthPolicy")
            .field("principals", &self.by_token.len())
            .finish_non_exhaustive()
    }
}

fn invalid(message: String) -> Error {
    Error::Policy { reason: message }
}

impl AuthPolicy {
    /// The policy of `file`, checked: names unique, token hashes 64
    /// lowercase hex digits and unique, methods and strengths known. A
    /// principal named `anonymous` (without a token) grants callers without
    /// credentials; without one they may call `status` only.
    ///
    /// # Errors
    /// [`Error::Policy`] naming the first thing wrong.
    pub fn new(file: &AuthFile) -> Result<Self> {
        let mut names = HashSet::new();
        let mut by_token = HashMap::new();
        let mut anonymous = None;
        for spec in &file.principals {
            if !names.insert(spec.name.clone()) {
                return Err(invalid(format!(
                    "principal {:?} is declared twice",
                    spec.name
                )));
            }
            let mut methods = HashSet::new();
            for m in &spec.methods {
                let row = crate::api::method(m).ok_or_else(|| {
                    invalid(format!("principal {:?}: unknown method {m:?}", spec.name))
                })?;
                methods.insert(row.name);
            }
            let strengths = match &spec.strengths {
                None => None,
                Some(bits) => Some(
                    bits.iter()
                        .map(|b| Strength::from_bits(*b))
                        .collect::<Result<Vec<_>>>()
                        .map_err(|e| invalid(format!("principal {:?}: {e}", spec.name)))?,
                ),
            };
            let principal = Arc::new(Principal {
                name: spec.name.clone(),
                methods,
                strengths,
            });
            match &spec.token_sha256 {
                None if spec.name == "anonymous" => anonymous = Some(principal),
                None => {
                    return Err(invalid(format!(
                        "principal {:?} has no token_sha256",
                        spec.name
                    )))
                }
                Some(_) if spec.name == "anonymous" => {
                    return Err(invalid("the anonymous principal has no token".into()))
                }
                Some(hex) => {
                    let hash = parse_hash(hex).ok_or_else(|| {
                        invalid(format!(
                            "principal {:?}: token_sha256 is 64 lowercase hex digits",
                            spec.name
                        ))
                    })?;
                    if by_token.insert(hash, principal).is_some() {
                        return Err(invalid(format!(
                            "principal {:?}: its token is another principal's",
                            spec.name
                        )));
                    }
                }
            }
        }
        let anonymous = anonymous.unwrap_or_else(|| {
            Arc::new(Principal {
                name: "anonymous".into(),
                methods: [crate::api::Call::Status.method().name].into(),
                strengths: None,
            })
        });
        Ok(AuthPolicy {
            by_token,
            anonymous,
        })
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
    /// The caller of the request being served (set by the request
    /// middleware around the handler; read by the dispatcher and the log).
    pub(crate) static CALLER: Caller;
}

/// The caller of the request this task serves (`Anyone` outside one).
pub(crate) fn current_caller() -> Caller {
    CALLER.try_with(Caller::clone).unwrap_or(Caller::Anyone)
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
}

impl Caller {
    /// The caller of a request with these headers under `auth`.
    pub(crate) fn of(auth: Option<&Auth>, headers: &axum::http::HeaderMap) -> Caller {
        let Some(auth) = auth else {
            return Caller::Anyone;
        };
        let policy = auth.policy();
        match bearer_or_basic(headers) {
            None => Caller::Principal(policy.anonymous()),
            Some(token) => match policy.principal_for_token(&token) {
                Some(principal) => Caller::Principal(principal),
                None => Caller::Refused,
            },
        }
    }

    /// Whether this caller may make `call`.
    pub(crate) fn check(&self, call: &Call) -> Result<()> {
        let permitted = match self {
            Caller::Anyone => true,
            Caller::Principal(p) => p.permits(call),
            Caller::Refused => false,
        };
        if permitted {
            Ok(())
        } else {
            Err(Error::NotPermitted)
        }
    }

    /// The name for the access log.
    pub(crate) fn name(&self) -> &str {
        match self {
            Caller::Anyone => "-",
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
            strengths: None,
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
            let caller = Caller::of(Some(&auth), &headers(creds));
            assert_eq!(caller.name(), "app");
            assert!(caller.check(&Call::Status).is_ok());
            assert!(caller.check(&Call::Generate(None)).is_ok());
            assert!(caller.check(&Call::Generate(Some(Strength::S128))).is_ok());
            let no = caller
                .check(&Call::Generate(Some(Strength::S256)))
                .unwrap_err();
            assert_eq!(no.code(), 13);
            assert!(caller
                .check(&Call::Contains(crate::KeyId::from_bytes([0; 32])))
                .is_err());
        }
        // No credentials: anonymous, status only. Bad ones: nothing.
        let anonymous = Caller::of(Some(&auth), &headers(None));
        assert!(anonymous.check(&Call::Status).is_ok());
        assert!(anonymous.check(&Call::Generate(None)).is_err());
        for bad in ["Bearer guess", "Basic !!", "Token app-token", "Bearer"] {
            let caller = Caller::of(Some(&auth), &headers(Some(bad)));
            assert!(caller.check(&Call::Status).is_err(), "{bad}");
        }
        // Without a policy, anyone may do anything.
        assert!(Caller::of(None, &headers(None))
            .check(&Call::Generate(None))
            .is_ok());
        // A new policy takes effect for the next request.
        auth.replace(AuthPolicy::new(&AuthFile::default()).unwrap());
        let caller = Caller::of(Some(&auth), &headers(Some("Bearer app-token")));
        assert!(caller.check(&Call::Status).is_err(), "revoked");
    }
}
