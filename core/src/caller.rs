//! Who makes a call, carried with the call itself.
//!
//! A listener authenticates a request's credentials (through
//! [`KeyService::authenticate`](crate::KeyService::authenticate)) and hands
//! the resulting [`Caller`] to [`KeyService::call_as`](crate::KeyService::call_as);
//! in-process code calls as [`Caller::local`], and the server's own work
//! (scheduled destructions) as [`Caller::server`]. The policy layers
//! (`keyserver::policy`) read it and refine it on the way in: the
//! authorization layer fills in the principal's quota, the lifecycle layer
//! decides its [`LifecycleRight`]. Nothing about the caller lives anywhere
//! else (no task-local, no per-connection state), so a call made outside
//! HTTP is held to the same rules.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// Who a caller is.
///
/// ```
/// use keyserver::api::Identity;
/// assert_eq!(Identity::Principal("app".into()).name(), "app");
/// assert_eq!(Identity::Server.name(), "server");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Identity {
    /// Code in the same process as the server (it owns the server: every
    /// right).
    Local,
    /// The server's own work: scheduled destructions and other sweeps.
    Server,
    /// No credentials, on a listener without access control. `remote`: the
    /// listener is not on loopback (only a holder's own restrictions are
    /// allowed then).
    Anonymous {
        /// Whether the listener is reachable from other hosts.
        remote: bool,
    },
    /// A principal of the access policy, by name (with access control, a
    /// request without credentials is the principal `anonymous`).
    Principal(String),
    /// Credentials that name no principal, or two different ones.
    BadCredentials,
}

impl Identity {
    /// The name written in access and audit logs: the principal's name,
    /// `server`, `local`, `-` (anonymous) or `(bad credentials)`.
    pub fn name(&self) -> &str {
        match self {
            Identity::Local => "local",
            Identity::Server => "server",
            Identity::Anonymous { .. } => "-",
            Identity::Principal(name) => name,
            Identity::BadCredentials => "(bad credentials)",
        }
    }

    /// Whether the caller proved who it is: a principal other than
    /// `anonymous` (the one of requests without credentials), or the
    /// process itself. A listener gives the others a small share of its
    /// resources, so that they cannot crowd out those who did.
    ///
    /// ```
    /// use keyserver::api::Identity;
    /// assert!(Identity::Principal("app".into()).is_authenticated());
    /// assert!(!Identity::Principal("anonymous".into()).is_authenticated());
    /// assert!(!Identity::BadCredentials.is_authenticated());
    /// assert!(!Identity::Anonymous { remote: false }.is_authenticated());
    /// ```
    pub fn is_authenticated(&self) -> bool {
        match self {
            Identity::Local | Identity::Server => true,
            Identity::Principal(name) => name != "anonymous",
            Identity::Anonymous { .. } | Identity::BadCredentials => false,
        }
    }
}

/// What a caller may do to a key's lifecycle (decided by the lifecycle
/// permission layer, enforced by the server under its state-change lock).
///
/// ```
/// use keyserver::api::LifecycleRight;
/// assert_ne!(LifecycleRight::Full, LifecycleRight::RestrictOnly);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LifecycleRight {
    /// Every change the state table allows, by key id or by KEK.
    Full,
    /// Only changes of a key whose KEK the caller presents, and only those
    /// after which the key is usable for nothing it was not usable for
    /// before (suspend, compromised of a usable key, destroy).
    RestrictOnly,
}

/// How many live keys an owner may hold: the access policy's `max_keys`,
/// looked up by the server for whoever will own a new key (the caller for
/// `generate`, the old key's owner for `rotate`).
pub trait Quotas: Send + Sync {
    /// The most live keys `owner` may own, `None` for no limit.
    fn max_keys(&self, owner: &str) -> Option<u64>;
}

/// The credentials a request presented, for
/// [`KeyService::authenticate`](crate::KeyService::authenticate).
#[derive(Clone, Copy, Default)]
#[non_exhaustive]
pub struct Credentials<'a> {
    /// A bearer token (or the password of HTTP Basic).
    pub token: Option<&'a str>,
    /// The subject and alternative names of a verified client certificate
    /// (`CN=...`, `DNS:...`, `URI:...`, `EMAIL:...`).
    pub tls_identities: &'a [String],
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.map(|_| "[redacted]"))
            .field("tls_identities", &self.tls_identities)
            .finish()
    }
}

impl<'a> Credentials<'a> {
    /// A token and certificate names.
    pub fn new(token: Option<&'a str>, tls_identities: &'a [String]) -> Self {
        Credentials {
            token,
            tls_identities,
        }
    }
}

/// Who makes a call, and what the policy layers have decided about it.
///
/// ```
/// use keyserver::api::{Caller, LifecycleRight};
///
/// let caller = Caller::local();
/// assert_eq!(caller.name(), "local");
/// assert_eq!(caller.lifecycle, LifecycleRight::Full);
/// assert!(caller.principal().is_none());
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Caller {
    /// Who it is.
    pub identity: Identity,
    /// The address the request came from (none in process).
    pub peer: Option<SocketAddr>,
    /// The subject of its verified client certificate.
    pub tls_subject: Option<String>,
    /// The protocol it called through (`jsonrpc`, `xmlrpc`, `in-process`,
    /// `server`).
    pub protocol: &'static str,
    /// How many live keys it may own (its `max_keys`).
    pub max_keys: Option<u64>,
    /// Every principal's `max_keys`, for keys made on another's behalf.
    pub quotas: Option<Arc<dyn Quotas>>,
    /// What it may do to a key's lifecycle.
    pub lifecycle: LifecycleRight,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("identity", &self.identity)
            .field("peer", &self.peer)
            .field("tls_subject", &self.tls_subject)
            .field("protocol", &self.protocol)
            .field("max_keys", &self.max_keys)
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

impl Default for Caller {
    /// [`Caller::local`].
    fn default() -> Self {
        Caller::local()
    }
}

impl PartialEq for Caller {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity
            && self.peer == other.peer
            && self.tls_subject == other.tls_subject
            && self.protocol == other.protocol
            && self.max_keys == other.max_keys
            && self.lifecycle == other.lifecycle
    }
}

impl Eq for Caller {}

impl Caller {
    /// A caller of `identity` with nothing else known: its lifecycle right
    /// is the safe one ([`LifecycleRight::RestrictOnly`]) unless it owns
    /// the server (local code, the server itself, or anonymous on a
    /// loopback listener without access control).
    pub fn with_identity(identity: Identity) -> Self {
        let lifecycle = match identity {
            Identity::Local | Identity::Server | Identity::Anonymous { remote: false } => {
                LifecycleRight::Full
            }
            _ => LifecycleRight::RestrictOnly,
        };
        Caller {
            identity,
            peer: None,
            tls_subject: None,
            protocol: "in-process",
            max_keys: None,
            quotas: None,
            lifecycle,
        }
    }

    /// In-process code that owns the server.
    pub fn local() -> Self {
        Caller::with_identity(Identity::Local)
    }

    /// The server's own work (audited with the principal `server`).
    pub fn server() -> Self {
        let mut caller = Caller::with_identity(Identity::Server);
        caller.protocol = "server";
        caller
    }

    /// A principal named `principal` owning at most `max_keys` keys (or, for
    /// `None`, in-process code): the constructor of the former
    /// `CallerInfo`.
    pub fn new(principal: Option<String>, max_keys: Option<u64>) -> Self {
        let mut caller = match principal {
            Some(name) => Caller::with_identity(Identity::Principal(name)),
            None => Caller::local(),
        };
        caller.max_keys = max_keys;
        caller
    }

    /// The same caller, from `peer` over `protocol`.
    pub fn from_peer(mut self, peer: Option<SocketAddr>, protocol: &'static str) -> Self {
        self.peer = peer;
        self.protocol = protocol;
        self
    }

    /// The principal that owns the keys this caller makes (`None`: no
    /// owner is recorded).
    pub fn principal(&self) -> Option<&str> {
        match &self.identity {
            Identity::Principal(name) => Some(name),
            _ => None,
        }
    }

    /// The name written in the logs (see [`Identity::name`]).
    pub fn name(&self) -> &str {
        self.identity.name()
    }

    /// The most live keys `owner` may own: from the policy's table when
    /// the caller carries one, otherwise the caller's own `max_keys` when it
    /// is `owner`.
    pub fn max_keys_of(&self, owner: &str) -> Option<u64> {
        if let Some(quotas) = &self.quotas {
            return quotas.max_keys(owner);
        }
        if self.principal() == Some(owner) {
            self.max_keys
        } else {
            None
        }
    }
}
