//! The wire API, defined once.
//!
//! Every wire method is named here and nowhere else: the [`KeyService`] trait
//! has one async method per wire method, [`Call`] and [`Reply`] are a call and
//! its answer as values, and [`METHODS`] is the method table (names, parameter
//! names and shapes, result shapes, help texts). A protocol is a codec between
//! its own values and the protocol-neutral [`Value`]: it parses a request into
//! a [`Call`] with [`Call::from_params`], and writes a [`Reply`] with
//! [`Reply::into_value`]; its client does the reverse with
//! [`Call::into_params`] and [`Reply::from_value`].
//!
//! Adding a wire method means adding it to [`KeyService`], to
//! [`KeyServer`](crate::KeyServer), to [`Call`]/[`Reply`] and [`METHODS`] here,
//! and to [`KeyClient`](crate::KeyClient); the codecs need nothing.
//!
//! # Example: a service that is not a `KeyServer`
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use keyserver::api::{Call, KeyService, Reply, Status};
//! use keyserver::{async_trait, Dek, Error, Kek, KeyId, Result, Strength, WrappedDek};
//!
//! /// A service that knows no keys.
//! struct Empty;
//!
//! #[async_trait]
//! impl KeyService for Empty {
//!     async fn generate(&self, _: Option<Strength>) -> Result<Kek> {
//!         Err(Error::Internal("read-only".into()))
//!     }
//!     async fn get_key(&self, kek: &Kek) -> Result<Dek> {
//!         Err(Error::NotFound { key_id: kek.id() })
//!     }
//!     async fn get_wrapped(&self, key_id: &KeyId) -> Result<WrappedDek> {
//!         Err(Error::NotFound { key_id: *key_id })
//!     }
//!     async fn contains(&self, _: &KeyId) -> Result<bool> {
//!         Ok(false)
//!     }
//!     async fn status(&self) -> Result<Status> {
//!         Ok(Status { keys: 0, version: "0".into(), suite: "-".into(), storage: "-".into(), strength: 128, kek_alg: "rsa".into(), fips: false })
//!     }
//! }
//!
//! let id = KeyId::from_bytes([1; 32]);
//! let reply = Empty.call(Call::Contains(id)).await?;
//! assert!(matches!(reply, Reply::Bool(false)));
//! # Ok::<(), keyserver::Error>(())
//! # }).unwrap();
//! ```

mod call;
mod table;
mod value;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::lifecycle::{Change, KeyFilter, KeyInfo, KeyPage, Target};
use crate::{Dek, Error, Kek, KekAlg, KeyId, Result, Strength, WrappedDek};

pub use call::{garbage, Call, Gauges, Reply};
pub use table::{method, unknown_method, Method, Param, METHODS};
pub use value::{Shape, Value};

pub use crate::lifecycle::{parse_rfc3339, rfc3339};

/// What a key server says about itself (the `status` call).
///
/// ```
/// let s = keyserver::Status {
///     keys: 3,
///     version: "0.1.0".into(),
///     suite: "rustcrypto".into(),
///     storage: "memory".into(),
///     strength: 128,
///     kek_alg: "ec".into(),
///     fips: false,
/// };
/// assert_eq!(s.keys, 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Number of stored keys.
    pub keys: u64,
    /// keyserver version of the server.
    pub version: String,
    /// Name of the server's cipher suite.
    pub suite: String,
    /// Name of the server's storage backend.
    pub storage: String,
    /// The server's minimum security strength in bits (what `generate`
    /// without a strength gives).
    pub strength: u16,
    /// The KEK algorithm `generate` without one uses (`rsa`, `ec` or
    /// `hybrid-pq`; `rsa`
    /// from a server older than KEK algorithms).
    #[serde(default = "default_kek_alg")]
    pub kek_alg: String,
    /// Whether the server's cipher suite is a FIPS 140-3 validated module
    /// in FIPS mode (`false` from a server older than this field).
    #[serde(default)]
    pub fips: bool,
}

fn default_kek_alg() -> String {
    KekAlg::Rsa.name().to_string()
}

/// The wire API: one async method per wire method.
///
/// Implemented by [`KeyServer`](crate::KeyServer) (the real thing) and by
/// every [`Transport`](crate::Transport) (a remote server through its
/// protocol), so the HTTP listener can serve either: a key server, or a proxy
/// to another one.
///
/// # Errors
///
/// Each method fails with the typed [`Error`] of what went wrong; across the
/// wire the same variant comes back ([`Error::from_wire`]).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait KeyService: Send + Sync {
    /// `generate([strength])`: make a KEK, store its wrapped DEK, return the
    /// KEK. `None` uses the server's configured strength.
    async fn generate(&self, strength: Option<Strength>) -> Result<Kek>;

    /// `generate([strength[, alg]])`: as [`KeyService::generate`], with the
    /// KEK's algorithm (`None`: the service's). The default serves `None`
    /// through `generate` and refuses a named algorithm with a policy
    /// error, for services written before algorithms could be chosen.
    async fn generate_with_alg(
        &self,
        strength: Option<Strength>,
        alg: Option<KekAlg>,
    ) -> Result<Kek> {
        match alg {
            None => self.generate(strength).await,
            Some(alg) => Err(Error::policy(format!(
                "this service does not offer a choice of KEK algorithm ({alg})"
            ))),
        }
    }

    /// `get_key(kek)`: server-side unwrap; the DEK of this KEK.
    async fn get_key(&self, kek: &Kek) -> Result<Dek>;

    /// `get_wrapped(key_id)`: the stored record, for client-side unwrap (the
    /// KEK never leaves the client).
    async fn get_wrapped(&self, key_id: &KeyId) -> Result<WrappedDek>;

    /// `contains(key_id)`: whether a key is stored under `key_id`.
    async fn contains(&self, key_id: &KeyId) -> Result<bool>;

    /// `status()`: what the server says about itself.
    async fn status(&self) -> Result<Status>;

    /// `describe(key_id)`: the key's lifecycle state, owner and times.
    /// A service without lifecycle answers "unknown method".
    async fn describe(&self, key_id: &KeyId) -> Result<KeyInfo> {
        let _ = key_id;
        Err(unknown_method())
    }

    /// `rotate(kek[, strength])`: a new KEK whose record wraps the same
    /// DEK (data encrypted before decrypts with it unchanged); the old key
    /// becomes deactivated, pointing to the new one.
    async fn rotate(&self, kek: &Kek, strength: Option<Strength>) -> Result<Kek> {
        let _ = (kek, strength);
        Err(unknown_method())
    }

    /// `suspend`, `resume`, `compromised`, `destroy`, `cancel_destroy` of
    /// `target`: the key as it is after the change.
    async fn change(&self, change: Change, target: &Target) -> Result<KeyInfo> {
        let _ = (change, target);
        Err(unknown_method())
    }

    /// `list_keys(filter)`: a page of keys.
    async fn list_keys(&self, filter: &KeyFilter) -> Result<KeyPage> {
        let _ = filter;
        Err(unknown_method())
    }

    /// Runs `call` for `caller`: the one entry of every call that has a
    /// caller (the listener's, in-process code's through the policy
    /// layers, the server's own). A service that records owners, enforces
    /// quotas or applies policy uses it; the default ignores who calls.
    async fn call_as(&self, caller: &Caller, call: Call) -> Result<Reply> {
        let _ = caller;
        self.call(call).await
    }

    /// Who presents `credentials`, for a service that controls access
    /// (the authorization layer); `None` (the default): this service does
    /// no access control, and a listener calls every request anonymous.
    fn authenticate<'a>(&self, credentials: &Credentials<'a>) -> Option<Identity> {
        let _ = credentials;
        None
    }

    /// Whether `caller` may read the metrics (`GET /metrics`). The default:
    /// callers on the loopback interface.
    fn may_read_metrics(&self, caller: &Caller) -> bool {
        caller.peer.is_some_and(|p| p.ip().is_loopback())
    }

    /// Appends this service's metrics (the Prometheus text format, without
    /// the closing `# EOF`) to `out`: a layer writes its own, then its
    /// inner service's. The default writes none.
    fn encode_metrics(&self, out: &mut String) {
        let _ = out;
    }

    /// Records a request refused before it became a call (unreadable, too
    /// large, of no known method): `method` is its name or `-`. The
    /// default forgets it; the audit and metrics layers record it.
    fn refused(&self, caller: &Caller, method: &str, error: &Error) {
        let _ = (caller, method, error);
    }

    /// Whether the service can answer (for `/readyz`): by default its
    /// status and a lookup that reads its storage; a layer adds its own
    /// condition (the audit log can be written).
    async fn ready(&self) -> Result<()> {
        self.status().await?;
        self.contains(&KeyId::from_bytes([0; 32])).await?;
        Ok(())
    }

    /// The server's own periodic work, done as `caller` (normally
    /// [`Caller::server`]): destroys the keys whose destruction is due and
    /// returns their ids. The default does nothing.
    async fn sweep(&self, caller: &Caller) -> Result<Vec<KeyId>> {
        let _ = caller;
        Ok(Vec::new())
    }

    /// What the service holds and does now, for monitoring (`/metrics`).
    /// A service that keeps none of these answers zeros (the default).
    fn gauges(&self) -> Gauges {
        Gauges::default()
    }

    /// Runs one [`Call`] and gives its [`Reply`]: the one place a call meets
    /// the typed methods above.
    async fn call(&self, call: Call) -> Result<Reply> {
        Ok(match call {
            Call::Generate(strength, alg) => {
                Reply::Kek(self.generate_with_alg(strength, alg).await?)
            }
            Call::GetKey(kek) => Reply::Dek(self.get_key(&kek).await?),
            Call::GetWrapped(id) => Reply::Wrapped(self.get_wrapped(&id).await?),
            Call::Contains(id) => Reply::Bool(self.contains(&id).await?),
            Call::Describe(id) => Reply::Info(self.describe(&id).await?),
            Call::Rotate(kek, strength) => Reply::Kek(self.rotate(&kek, strength).await?),
            Call::Change(change, target) => Reply::Info(self.change(change, &target).await?),
            Call::ListKeys(filter) => Reply::Keys(self.list_keys(&filter).await?),
            Call::Status => Reply::Status(self.status().await?),
        })
    }
}

pub use crate::caller::{Caller, Credentials, Identity, LifecycleRight, Quotas};

/// The former name of [`Caller`].
pub type CallerInfo = Caller;

#[cfg(test)]
mod tests;
