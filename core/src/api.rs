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

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::lifecycle::{Change, KeyFilter, KeyInfo, KeyPage, Target};
use crate::{Dek, Error, ErrorCode, Kek, KekAlg, KeyId, Result, Strength, WrappedDek};

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

/// One call of the wire API, with its parameters parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `generate([strength[, alg]])`.
    Generate(Option<Strength>, Option<KekAlg>),
    /// `get_key(kek)`.
    GetKey(Kek),
    /// `get_wrapped(key_id)`.
    GetWrapped(KeyId),
    /// `contains(key_id)`.
    Contains(KeyId),
    /// `status()`.
    Status,
    /// `describe(key_id)`.
    Describe(KeyId),
    /// `rotate(kek[, strength])`.
    Rotate(Kek, Option<Strength>),
    /// `suspend`, `resume`, `compromised`, `destroy` or `cancel_destroy`
    /// of a target (a KEK or a key id).
    Change(Change, Target),
    /// `list_keys([filter])`.
    ListKeys(KeyFilter),
}

pub use crate::caller::{Caller, Credentials, Identity, LifecycleRight, Quotas};

/// The former name of [`Caller`].
pub type CallerInfo = Caller;

/// What a service holds and does at one moment, for monitoring.
///
/// ```
/// let g = keyserver::api::Gauges::default();
/// assert_eq!(g.keys, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gauges {
    /// Keys stored.
    pub keys: u64,
    /// Pre-generated KEKs ready.
    pub kek_pool_ready: u64,
    /// Key generations running.
    pub generate_running: u64,
    /// `generate` calls waiting for a worker.
    pub generate_waiting: u64,
    /// Records a listing met and could not read (damaged, or of a newer
    /// format), left out of it; counted since start, once per listing.
    pub records_unreadable: u64,
}

/// The answer to a [`Call`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// A KEK (`generate`).
    Kek(Kek),
    /// A DEK (`get_key`).
    Dek(Dek),
    /// A stored record (`get_wrapped`).
    Wrapped(WrappedDek),
    /// A yes or no (`contains`).
    Bool(bool),
    /// The server's status (`status`).
    Status(Status),
    /// A key's lifecycle (`describe` and the state changes).
    Info(KeyInfo),
    /// A page of keys (`list_keys`).
    Keys(KeyPage),
}

/// A value on the wire, whatever the protocol: what the codecs translate to
/// and from. Strings and bytes are wiped on drop (they may hold a KEK or a
/// DEK); `Debug` shows their lengths only.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(Zeroizing<String>),
    /// Binary data (XML-RPC `<base64>`, a base64 string in JSON).
    Bytes(Zeroizing<Vec<u8>>),
    /// A struct (an XML-RPC `<struct>`, a JSON object).
    Struct(BTreeMap<String, Value>),
    /// An array (an XML-RPC `<array>`, a JSON array).
    Array(Vec<Value>),
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(Zeroizing::new(s.into()))
    }

    /// A bytes value.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(Zeroizing::new(b.into()))
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "Int({i})"),
            Value::Bool(b) => write!(f, "Bool({b})"),
            Value::Str(s) => write!(f, "Str(<{} bytes>)", s.len()),
            Value::Bytes(b) => write!(f, "Bytes(<{} bytes>)", b.len()),
            Value::Struct(m) => f.debug_map().entries(m.iter()).finish(),
            Value::Array(items) => f.debug_list().entries(items.iter()).finish(),
        }
    }
}

/// The shape of a parameter or a result, as the method table gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// An integer.
    Int,
    /// A boolean.
    Bool,
    /// A string.
    Str,
    /// Binary data.
    Bytes,
    /// A struct with these members.
    Struct(&'static [(&'static str, Shape)]),
    /// An array of values of this shape.
    Array(&'static Shape),
    /// Any value: a struct whose members are optional or vary, read by
    /// name (a JSON value is taken as it is: numbers as integers, strings
    /// as strings).
    Any,
}

impl Shape {
    /// The type's name as docs/PROTOCOL.md writes it.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Int => "int",
            Shape::Bool => "boolean",
            Shape::Str => "string",
            Shape::Bytes => "base64",
            Shape::Struct(_) | Shape::Any => "struct",
            Shape::Array(_) => "array",
        }
    }

    fn fits(self, value: &Value) -> bool {
        match (self, value) {
            (Shape::Int, Value::Int(_))
            | (Shape::Bool, Value::Bool(_))
            | (Shape::Str, Value::Str(_))
            | (Shape::Bytes, Value::Bytes(_)) => true,
            // Members the shape does not name are ignored: a newer server may
            // send more.
            (Shape::Struct(members), Value::Struct(map)) => members
                .iter()
                .all(|(name, shape)| map.get(*name).is_some_and(|v| shape.fits(v))),
            (Shape::Array(shape), Value::Array(items)) => items.iter().all(|v| shape.fits(v)),
            (Shape::Any, _) => true,
            _ => false,
        }
    }
}

/// A parameter of a wire method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// Its name (JSON-RPC named parameters use it).
    pub name: &'static str,
    /// Its shape.
    pub shape: Shape,
    /// Whether it may be left out (only trailing parameters).
    pub optional: bool,
}

/// One row of the method table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Method {
    /// The wire name.
    pub name: &'static str,
    /// Its parameters, in order.
    pub params: &'static [Param],
    /// The shape of its result.
    pub result: Shape,
    /// One paragraph for `system.methodHelp`.
    pub help: &'static str,
}

impl Method {
    /// Whether a call of it costs real CPU or I/O (key generation, an RSA
    /// decryption or key-pair check, a listing): `generate`, `get_key`,
    /// `rotate`, the state changes and `list_keys`. A batch may hold only a
    /// few.
    ///
    /// ```
    /// assert!(keyserver::api::method("get_key").unwrap().is_expensive());
    /// assert!(!keyserver::api::method("status").unwrap().is_expensive());
    /// ```
    pub fn is_expensive(&self) -> bool {
        // A state change may check a KEK (an RSA key-pair check); a listing
        // reads every key's metadata.
        self.name == GENERATE.name
            || self.name == GET_KEY.name
            || self.name == ROTATE.name
            || self.name == LIST_KEYS.name
            || Change::ALL.iter().any(|c| c.name() == self.name)
    }

    /// Whether it changes what the server stores: `generate`, `rotate`
    /// and the state changes.
    pub fn changes_state(&self) -> bool {
        self.name == GENERATE.name
            || self.name == ROTATE.name
            || Change::ALL.iter().any(|c| c.name() == self.name)
    }

    /// Whether a call of it is answered only once its audit line is on
    /// disk: every state change, and `get_key`, which hands out a DEK.
    pub fn audited_durably(&self) -> bool {
        self.changes_state() || self.name == GET_KEY.name
    }

    /// The parameter list as a protocol writes it: `open` and `close` are
    /// `(`/`)` for XML-RPC and `[`/`]` for JSON-RPC, so the signature of
    /// `generate` reads `() or (strength: int)` on XML-RPC.
    ///
    /// ```
    /// let generate = keyserver::api::method("generate").unwrap();
    /// assert_eq!(generate.signature('[', ']'), "[] or [strength: int, alg: string]");
    /// ```
    pub fn signature(&self, open: char, close: char) -> String {
        let list = |params: &[Param]| {
            let inner: Vec<String> = params
                .iter()
                .map(|p| format!("{}: {}", p.name, p.shape.name()))
                .collect();
            format!("{open}{}{close}", inner.join(", "))
        };
        let required = self.params.iter().take_while(|p| !p.optional).count();
        if required == self.params.len() {
            list(self.params)
        } else {
            format!(
                "{} or {}",
                list(&self.params[..required]),
                list(self.params)
            )
        }
    }

    /// The error for parameters that do not fit this method.
    pub fn invalid_params(&self, open: char, close: char) -> Error {
        Error::protocol(
            ErrorCode::InvalidParams,
            format!(
                "invalid parameters: expected {}",
                self.signature(open, close)
            ),
        )
    }

    fn accepts(&self, params: &[Value]) -> bool {
        let required = self.params.iter().filter(|p| !p.optional).count();
        (required..=self.params.len()).contains(&params.len())
            && self.params.iter().zip(params).all(|(p, v)| p.shape.fits(v))
    }
}

const KEY_ID: Param = Param {
    name: "key_id",
    shape: Shape::Str,
    optional: false,
};

const GENERATE: Method = Method {
    name: "generate",
    params: &[
        Param {
            name: "strength",
            shape: Shape::Int,
            optional: true,
        },
        Param {
            name: "alg",
            shape: Shape::Str,
            optional: true,
        },
    ],
    result: Shape::Str,
    help: "generate([strength[, alg]]) -> string: creates a key-encryption key (KEK) of the given \
           security strength (128, 192 or 256; default: the server's) and algorithm (rsa, ec or \
           hybrid-pq; default: the server's), stores its wrapped data key, and returns the \
           private KEK as PEM. The server keeps no copy.",
};

const GET_KEY: Method = Method {
    name: "get_key",
    params: &[Param {
        name: "kek",
        shape: Shape::Str,
        optional: false,
    }],
    result: Shape::Bytes,
    help: "get_key(kek) -> base64: unwraps and returns the data key (DEK) of the KEK given as \
           PKCS#8 PEM (server-side unwrap).",
};

const GET_WRAPPED: Method = Method {
    name: "get_wrapped",
    params: &[KEY_ID],
    result: Shape::Struct(&[("key_id", Shape::Str), ("record", Shape::Bytes)]),
    help: "get_wrapped(key_id) -> struct {key_id, record}: the stored wrapped-DEK record, for \
           client-side unwrap (the KEK never leaves the client).",
};

const CONTAINS: Method = Method {
    name: "contains",
    params: &[KEY_ID],
    result: Shape::Bool,
    help: "contains(key_id) -> boolean: whether a key is stored under this key id.",
};

const STATUS: Method = Method {
    name: "status",
    params: &[],
    // Any: kek_alg and fips are absent from older servers (the reply is
    // checked member by member when it is read).
    result: Shape::Any,
    help: "status() -> struct {keys, version, suite, storage, strength, kek_alg, fips}: what the \
           server says about itself.",
};

const TARGET: Param = Param {
    name: "target",
    shape: Shape::Str,
    optional: false,
};

const DESCRIBE: Method = Method {
    name: "describe",
    params: &[KEY_ID],
    result: Shape::Any,
    help: "describe(key_id) -> struct {key_id, state, strength, created, owner, deactivate_at, \
           destroy_at, rotated_to, rotated_from, kek_alg}: the key's lifecycle (absent members omitted; times as RFC \
           3339 strings).",
};

const ROTATE: Method = Method {
    name: "rotate",
    params: &[
        Param {
            name: "kek",
            shape: Shape::Str,
            optional: false,
        },
        Param {
            name: "strength",
            shape: Shape::Int,
            optional: true,
        },
    ],
    result: Shape::Str,
    help: "rotate(kek[, strength]) -> string: a new KEK (PKCS#8 PEM) whose record wraps the same \
           data key, so data encrypted before decrypts with it unchanged; the old key becomes \
           deactivated with rotated_to set. A strength moves the key to a stronger KEK.",
};

const fn change_method(name: &'static str, help: &'static str) -> Method {
    Method {
        name,
        params: &[TARGET],
        result: Shape::Any,
        help,
    }
}

const SUSPEND: Method = change_method(
    "suspend",
    "suspend(target) -> struct: the key (target: its KEK as PEM, or its key id for operators) \
     gives no data key until resumed.",
);
const RESUME: Method = change_method(
    "resume",
    "resume(target) -> struct: a suspended key returns to the state it had.",
);
const COMPROMISED: Method = change_method(
    "compromised",
    "compromised(target) -> struct: the key is marked compromised: it still gives its data key \
     (to re-encrypt old data), each use logged as a warning, and encrypts nothing new.",
);
const DESTROY: Method = change_method(
    "destroy",
    "destroy(target) -> struct {key_id, state, destroy_at, ...}: the key gives nothing from now \
     and its wrapped data key is destroyed at destroy_at (the server's destroy window from \
     now) unless cancel_destroy comes first.",
);
const CANCEL_DESTROY: Method = change_method(
    "cancel_destroy",
    "cancel_destroy(target) -> struct: a destroy-pending key returns to the state it had.",
);

const LIST_KEYS: Method = Method {
    name: "list_keys",
    params: &[Param {
        name: "filter",
        shape: Shape::Any,
        optional: true,
    }],
    result: Shape::Any,
    help: "list_keys([filter]) -> struct {keys: array of describe structs, cursor}: a page of \
           keys in key id order; filter {state, owner, past_cryptoperiod, cursor, limit}, every \
           member optional; pass the answer's cursor for the next page.",
};

/// The method table: every wire method, once.
pub const METHODS: &[Method] = &[
    GENERATE,
    GET_KEY,
    GET_WRAPPED,
    CONTAINS,
    STATUS,
    DESCRIBE,
    ROTATE,
    SUSPEND,
    RESUME,
    COMPROMISED,
    DESTROY,
    CANCEL_DESTROY,
    LIST_KEYS,
];

/// The row of the method table named `name`.
pub fn method(name: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.name == name)
}

/// The error for a method name not in the table.
pub fn unknown_method() -> Error {
    Error::protocol(ErrorCode::MethodNotFound, "unknown method")
}

impl Call {
    /// The method table's row for this call.
    pub fn method(&self) -> &'static Method {
        match self {
            Call::Generate(..) => &GENERATE,
            Call::GetKey(_) => &GET_KEY,
            Call::GetWrapped(_) => &GET_WRAPPED,
            Call::Contains(_) => &CONTAINS,
            Call::Status => &STATUS,
            Call::Describe(_) => &DESCRIBE,
            Call::Rotate(..) => &ROTATE,
            Call::Change(change, _) => match change {
                Change::Suspend => &SUSPEND,
                Change::Resume => &RESUME,
                Change::Compromised => &COMPROMISED,
                Change::Destroy => &DESTROY,
                Change::CancelDestroy => &CANCEL_DESTROY,
            },
            Call::ListKeys(_) => &LIST_KEYS,
        }
    }

    /// The key this call is about, if any (for logs and typed errors).
    pub fn key_id(&self) -> Option<KeyId> {
        match self {
            Call::GetKey(kek) | Call::Rotate(kek, _) => Some(kek.id()),
            Call::GetWrapped(id) | Call::Contains(id) | Call::Describe(id) => Some(*id),
            Call::Change(_, target) => Some(target.key_id()),
            Call::Generate(..) | Call::Status | Call::ListKeys(_) => None,
        }
    }

    /// Parses a call from its method name and positional parameters. `open`
    /// and `close` are the protocol's brackets for the error message.
    ///
    /// # Errors
    /// [`Error::Protocol`] for an unknown method (`MethodNotFound`) or
    /// parameters that do not fit (`InvalidParams`); the typed error of a
    /// parameter that fits but is not acceptable (a strength that is not 128,
    /// 192 or 256 is a [`Error::Policy`], a KEK that does not parse an
    /// [`Error::InvalidKey`]). Never quotes a parameter.
    ///
    /// ```
    /// use keyserver::api::{Call, Value};
    ///
    /// let call = Call::from_params("generate", vec![Value::Int(192)], ('(', ')'))?;
    /// assert_eq!(call, Call::Generate(Some(keyserver::Strength::S192), None));
    /// let err = Call::from_params("contains", vec![], ('(', ')')).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid parameters: expected (key_id: string)");
    /// # Ok::<(), keyserver::Error>(())
    /// ```
    pub fn from_params(name: &str, params: Vec<Value>, brackets: (char, char)) -> Result<Call> {
        let method = method(name).ok_or_else(unknown_method)?;
        if !method.accepts(&params) {
            return Err(method.invalid_params(brackets.0, brackets.1));
        }
        // `accepts` checked the number and shapes of the parameters.
        let mut params = params.into_iter();
        let first = params.next();
        let second = params.next();
        let text = |value: Option<Value>| match value {
            Some(Value::Str(s)) => Ok(s),
            _ => Err(method.invalid_params(brackets.0, brackets.1)),
        };
        match method.name {
            n if n == GENERATE.name => {
                let strength = match first {
                    Some(Value::Int(bits)) => Some(parse_strength(bits)?),
                    _ => None,
                };
                let alg = match second {
                    Some(Value::Str(name)) => Some(name.parse::<KekAlg>()?),
                    _ => None,
                };
                Ok(Call::Generate(strength, alg))
            }
            n if n == GET_KEY.name => Kek::from_pem(&text(first)?).map(Call::GetKey),
            n if n == GET_WRAPPED.name => text(first)?.parse().map(Call::GetWrapped),
            n if n == CONTAINS.name => text(first)?.parse().map(Call::Contains),
            n if n == STATUS.name => Ok(Call::Status),
            n if n == DESCRIBE.name => text(first)?.parse().map(Call::Describe),
            n if n == ROTATE.name => {
                let kek = Kek::from_pem(&text(first)?)?;
                let strength = match second {
                    Some(Value::Int(bits)) => Some(parse_strength(bits)?),
                    _ => None,
                };
                Ok(Call::Rotate(kek, strength))
            }
            n if n == LIST_KEYS.name => parse_filter(first).map(Call::ListKeys),
            n => {
                let change = Change::ALL
                    .into_iter()
                    .find(|c| c.name() == n)
                    .ok_or_else(unknown_method)?;
                let target = text(first)?;
                let target = if target.trim_start().starts_with("-----BEGIN") {
                    Target::Kek(Kek::from_pem(&target)?)
                } else {
                    Target::KeyId(target.parse()?)
                };
                Ok(Call::Change(change, target))
            }
        }
    }

    /// The positional parameters of this call, for a client to send.
    pub fn into_params(self) -> Vec<Value> {
        match self {
            Call::Generate(None, None) | Call::Status => Vec::new(),
            Call::Generate(Some(s), None) => vec![Value::Int(i64::from(s.bits()))],
            Call::Generate(Some(s), Some(alg)) => {
                vec![Value::Int(i64::from(s.bits())), Value::str(alg.name())]
            }
            // The wire names an algorithm only after a strength: a server
            // refuses this as invalid parameters, so a transport first
            // asks the server's strength (`Transport`'s `generate_with_alg`).
            Call::Generate(None, Some(alg)) => vec![Value::str(alg.name())],
            Call::GetKey(kek) => vec![Value::Str(kek.to_pem())],
            Call::GetWrapped(id) | Call::Contains(id) | Call::Describe(id) => {
                vec![Value::str(id.to_string())]
            }
            Call::Rotate(kek, None) => vec![Value::Str(kek.to_pem())],
            Call::Rotate(kek, Some(s)) => {
                vec![Value::Str(kek.to_pem()), Value::Int(i64::from(s.bits()))]
            }
            Call::Change(_, Target::Kek(kek)) => vec![Value::Str(kek.to_pem())],
            Call::Change(_, Target::KeyId(id)) => vec![Value::str(id.to_string())],
            Call::ListKeys(filter) => vec![filter_value(filter)],
        }
    }
}

/// A `list_keys` filter from its wire struct (every member optional).
fn parse_filter(value: Option<Value>) -> Result<KeyFilter> {
    let bad =
        |what: &str| Error::protocol(ErrorCode::InvalidParams, format!("invalid filter: {what}"));
    let map = match value {
        None => return Ok(KeyFilter::default()),
        Some(Value::Struct(map)) => map,
        Some(_) => return Err(bad("a struct")),
    };
    let mut filter = KeyFilter::default();
    for (name, value) in map {
        match (name.as_str(), value) {
            ("state", Value::Str(s)) => filter.state = Some(s.parse().map_err(|_| bad("state"))?),
            ("owner", Value::Str(s)) => filter.owner = Some(s.to_string()),
            ("past_cryptoperiod", Value::Bool(b)) => filter.past_cryptoperiod = b,
            ("cursor", Value::Str(s)) => {
                filter.cursor = Some(s.parse().map_err(|_| bad("cursor"))?)
            }
            ("limit", Value::Int(n)) => {
                filter.limit = Some(u32::try_from(n).map_err(|_| bad("limit"))?)
            }
            (other, _) => return Err(bad(&format!("unknown member or type: {other}"))),
        }
    }
    Ok(filter)
}

fn filter_value(filter: KeyFilter) -> Value {
    let mut map = BTreeMap::new();
    if let Some(state) = filter.state {
        map.insert("state".into(), Value::str(state.name()));
    }
    if let Some(owner) = filter.owner {
        map.insert("owner".into(), Value::str(owner));
    }
    if filter.past_cryptoperiod {
        map.insert("past_cryptoperiod".into(), Value::Bool(true));
    }
    if let Some(cursor) = filter.cursor {
        map.insert("cursor".into(), Value::str(cursor.to_string()));
    }
    if let Some(limit) = filter.limit {
        map.insert("limit".into(), Value::Int(i64::from(limit)));
    }
    Value::Struct(map)
}

fn info_value(info: KeyInfo) -> Value {
    let mut map = BTreeMap::from([
        ("key_id".to_string(), Value::str(info.key_id.to_string())),
        ("state".to_string(), Value::str(info.state.name())),
        (
            "strength".to_string(),
            Value::Int(i64::from(info.strength.bits())),
        ),
        ("created".to_string(), Value::str(rfc3339(info.created))),
    ]);
    if let Some(owner) = info.owner {
        map.insert("owner".into(), Value::str(owner));
    }
    if let Some(t) = info.deactivate_at {
        map.insert("deactivate_at".into(), Value::str(rfc3339(t)));
    }
    if let Some(t) = info.destroy_at {
        map.insert("destroy_at".into(), Value::str(rfc3339(t)));
    }
    if let Some(id) = info.rotated_to {
        map.insert("rotated_to".into(), Value::str(id.to_string()));
    }
    if let Some(id) = info.rotated_from {
        map.insert("rotated_from".into(), Value::str(id.to_string()));
    }
    if let Some(alg) = info.kek_alg {
        map.insert("kek_alg".into(), Value::str(alg.name()));
    }
    Value::Struct(map)
}

fn info_from_value(value: &Value) -> Option<KeyInfo> {
    let Value::Struct(map) = value else {
        return None;
    };
    let text = |name: &str| match map.get(name) {
        Some(Value::Str(s)) => Some(s.as_str()),
        _ => None,
    };
    let time = |name: &str| text(name).map(parse_rfc3339);
    let strength = match map.get("strength") {
        Some(Value::Int(bits)) => parse_strength(*bits).ok()?,
        _ => return None,
    };
    Some(KeyInfo {
        key_id: text("key_id")?.parse().ok()?,
        state: text("state")?.parse().ok()?,
        strength,
        created: time("created")??,
        owner: text("owner").map(str::to_owned),
        deactivate_at: time("deactivate_at")
            .map(|t| t.ok_or(()))
            .transpose()
            .ok()?,
        destroy_at: time("destroy_at").map(|t| t.ok_or(())).transpose().ok()?,
        rotated_to: match text("rotated_to") {
            Some(id) => Some(id.parse().ok()?),
            None => None,
        },
        rotated_from: match text("rotated_from") {
            Some(id) => Some(id.parse().ok()?),
            None => None,
        },
        // An algorithm this version does not know is left unsaid, not a
        // reason to refuse the whole answer.
        kek_alg: text("kek_alg").and_then(|alg| alg.parse().ok()),
    })
}

/// Parses the `strength` parameter of `generate`.
fn parse_strength(bits: i64) -> Result<Strength> {
    u32::try_from(bits)
        .map_err(|_| Error::policy("strength must be 128, 192 or 256"))
        .and_then(Strength::from_bits)
}

/// The client's error for an answer that does not fit the method table
/// (what a transport's client returns when a reply's shape is not the
/// method's).
///
/// ```
/// let method = keyserver::api::method("get_key").unwrap();
/// let e = keyserver::api::garbage(method);
/// assert_eq!(e.kind(), Some(keyserver::ErrorCode::Transport));
/// ```
pub fn garbage(method: &Method) -> Error {
    Error::Transport {
        message: format!(
            "the server's answer to {} does not fit the protocol",
            method.name
        ),
        source: None,
    }
}

impl Reply {
    /// This reply as a wire value, for a server to send.
    pub fn into_value(self) -> Value {
        match self {
            Reply::Kek(kek) => Value::Str(kek.to_pem()),
            Reply::Dek(dek) => Value::bytes(dek.as_bytes()),
            Reply::Wrapped(record) => Value::Struct(BTreeMap::from([
                (
                    "key_id".to_string(),
                    Value::str(record.key_id().to_string()),
                ),
                ("record".to_string(), Value::bytes(record.encode())),
            ])),
            Reply::Bool(b) => Value::Bool(b),
            Reply::Info(info) => info_value(info),
            Reply::Keys(page) => {
                let mut map = BTreeMap::from([(
                    "keys".to_string(),
                    Value::Array(page.keys.into_iter().map(info_value).collect()),
                )]);
                if let Some(cursor) = page.cursor {
                    map.insert("cursor".into(), Value::str(cursor.to_string()));
                }
                Value::Struct(map)
            }
            Reply::Status(status) => Value::Struct(BTreeMap::from([
                (
                    "keys".to_string(),
                    Value::Int(i64::try_from(status.keys).unwrap_or(i64::MAX)),
                ),
                ("version".to_string(), Value::str(status.version)),
                ("suite".to_string(), Value::str(status.suite)),
                ("storage".to_string(), Value::str(status.storage)),
                (
                    "strength".to_string(),
                    Value::Int(i64::from(status.strength)),
                ),
                ("kek_alg".to_string(), Value::str(status.kek_alg)),
                ("fips".to_string(), Value::Bool(status.fips)),
            ])),
        }
    }

    /// The reply to `call` from the wire value a server sent.
    ///
    /// # Errors
    /// [`Error::Transport`] if the value does not fit the method's result
    /// (including a record stored under another key id than asked for).
    pub fn from_value(call: &Call, value: Value) -> Result<Reply> {
        let method = call.method();
        let bad = || garbage(method);
        if !method.result.fits(&value) {
            return Err(bad());
        }
        match (call, value) {
            (Call::Generate(..), Value::Str(pem)) => {
                Kek::from_pem(&pem).map(Reply::Kek).map_err(|_| bad())
            }
            (Call::GetKey(_), Value::Bytes(bytes)) => {
                Dek::from_bytes(&bytes).map(Reply::Dek).map_err(|_| bad())
            }
            (Call::GetWrapped(id), Value::Struct(map)) => {
                match (map.get("key_id"), map.get("record")) {
                    (Some(Value::Str(got)), Some(Value::Bytes(record)))
                        if got.as_str() == id.to_string() =>
                    {
                        WrappedDek::decode(record, id).map(Reply::Wrapped)
                    }
                    _ => Err(bad()),
                }
            }
            (Call::Contains(_), Value::Bool(b)) => Ok(Reply::Bool(b)),
            (Call::Rotate(..), Value::Str(pem)) => {
                Kek::from_pem(&pem).map(Reply::Kek).map_err(|_| bad())
            }
            (Call::Describe(id), value) => match info_from_value(&value) {
                Some(info) if info.key_id == *id => Ok(Reply::Info(info)),
                _ => Err(bad()),
            },
            (Call::Change(_, target), value) => match info_from_value(&value) {
                Some(info) if info.key_id == target.key_id() => Ok(Reply::Info(info)),
                _ => Err(bad()),
            },
            (Call::ListKeys(_), Value::Struct(map)) => {
                let keys = match map.get("keys") {
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(info_from_value)
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(bad)?,
                    _ => return Err(bad()),
                };
                let cursor = match map.get("cursor") {
                    Some(Value::Str(id)) => Some(id.parse().map_err(|_| bad())?),
                    None => None,
                    Some(_) => return Err(bad()),
                };
                Ok(Reply::Keys(KeyPage { keys, cursor }))
            }
            (Call::Status, Value::Struct(map)) => {
                let int = |name: &str| match map.get(name) {
                    Some(Value::Int(i)) => Some(*i),
                    _ => None,
                };
                let text = |name: &str| match map.get(name) {
                    Some(Value::Str(s)) => Some(s.to_string()),
                    _ => None,
                };
                (|| {
                    Some(Reply::Status(Status {
                        keys: u64::try_from(int("keys")?).ok()?,
                        version: text("version")?,
                        suite: text("suite")?,
                        storage: text("storage")?,
                        strength: u16::try_from(int("strength")?).ok()?,
                        kek_alg: text("kek_alg").unwrap_or_else(default_kek_alg),
                        // Absent from a server older than the field.
                        fips: matches!(map.get("fips"), Some(Value::Bool(true))),
                    }))
                })()
                .ok_or_else(bad)
            }
            _ => Err(bad()),
        }
    }

    fn mismatch() -> Error {
        Error::Internal("a reply of another method's kind".into())
    }

    /// The KEK of a `generate` reply.
    ///
    /// # Errors
    /// [`Error::Internal`] for a reply of another kind.
    pub fn into_kek(self) -> Result<Kek> {
        match self {
            Reply::Kek(kek) => Ok(kek),
            _ => Err(Self::mismatch()),
        }
    }

    /// The DEK of a `get_key` reply.
    ///
    /// # Errors
    /// [`Error::Internal`] for a reply of another kind.
    pub fn into_dek(self) -> Result<Dek> {
        match self {
            Reply::Dek(dek) => Ok(dek),
            _ => Err(Self::mismatch()),
        }
    }

    /// The record of a `get_wrapped` reply.
    ///
    /// # Errors
    /// [`Error::Internal`] for a reply of another kind.
    pub fn into_wrapped(self) -> Result<WrappedDek> {
        match self {
            Reply::Wrapped(record) => Ok(record),
            _ => Err(Self::mismatch()),
        }
    }

    /// The answer of a `contains` reply.
    ///
    /// # Errors
    /// [`Error::Internal`] for a reply of another kind.
    pub fn into_bool(self) -> Result<bool> {
        match self {
            Reply::Bool(b) => Ok(b),
            _ => Err(Self::mismatch()),
        }
    }

    /// The key of a `describe` or state-change reply.
    ///
    /// # Errors
    /// [`Error::Internal`] for a reply of another kind.
    pub fn into_info(self) -> Result<KeyInfo> {
        match self {
            Reply::Info(info) => Ok(info),
            _ => Err(Self::mismatch()),
        }
    }

    /// The page of a `list_keys` reply.
    ///
    /// # Errors
    /// [`Error::Internal`] for a reply of another kind.
    pub fn into_keys(self) -> Result<KeyPage> {
        match self {
            Reply::Keys(page) => Ok(page),
            _ => Err(Self::mismatch()),
        }
    }

    /// The status of a `status` reply.
    ///
    /// # Errors
    /// [`Error::Internal`] for a reply of another kind.
    pub fn into_status(self) -> Result<Status> {
        match self {
            Reply::Status(status) => Ok(status),
            _ => Err(Self::mismatch()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEK_3072: &str = include_str!("../../testing/fixtures/kek-rsa3072.pem");

    #[test]
    fn every_call_survives_its_parameters() {
        let kek = Kek::from_pem(KEK_3072).expect("fixture"); // ok: test fixture
        let id = kek.id();
        let calls = [
            Call::Generate(None, None),
            Call::Generate(Some(Strength::S256), None),
            Call::Generate(Some(Strength::S192), Some(KekAlg::Ec)),
            Call::GetKey(kek),
            Call::GetWrapped(id),
            Call::Contains(id),
            Call::Status,
            Call::Describe(id),
            Call::Rotate(Kek::from_pem(KEK_3072).expect("fixture"), None), // ok: test fixture
            Call::Rotate(
                Kek::from_pem(KEK_3072).expect("fixture"),
                Some(Strength::S192),
            ), // ok: test fixture
            Call::Change(crate::Change::Suspend, crate::Target::KeyId(id)),
            Call::Change(
                crate::Change::Destroy,
                crate::Target::Kek(Kek::from_pem(KEK_3072).expect("fixture")), // ok: test fixture
            ),
            Call::ListKeys(crate::KeyFilter::default()),
            Call::ListKeys(crate::KeyFilter {
                state: Some(crate::KeyState::Compromised),
                owner: Some("app".into()),
                past_cryptoperiod: true,
                cursor: Some(id),
                limit: Some(5),
            }),
        ];
        for call in calls {
            let name = call.method().name;
            let params = call.clone().into_params();
            assert!(call.method().accepts(&params), "{name}");
            let back = Call::from_params(name, params, ('(', ')')).expect("parses"); // ok: test
            assert_eq!(back, call);
        }
        assert_eq!(METHODS.len(), 13);
        for m in METHODS {
            assert_eq!(method(m.name), Some(m));
            assert!(m.help.starts_with(m.name), "{} help", m.name);
        }
    }

    #[test]
    fn a_reply_survives_its_value_and_a_wrong_shape_is_a_transport_error() {
        let status = Status {
            keys: 3,
            version: "1".into(),
            suite: "s".into(),
            storage: "m".into(),
            strength: 192,
            kek_alg: "ec".into(),
            fips: true,
        };
        let value = Reply::Status(status.clone()).into_value();
        assert_eq!(
            Reply::from_value(&Call::Status, value).ok(),
            Some(Reply::Status(status))
        );
        let id = KeyId::from_bytes([1; 32]);
        let err = Reply::from_value(&Call::Contains(id), Value::Int(1)).unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        // A record stored under another key id than asked for is refused.
        let other = Value::Struct(BTreeMap::from([
            ("key_id".to_string(), Value::str("00".repeat(32))),
            ("record".to_string(), Value::bytes(vec![0u8; 8])),
        ]));
        assert!(Reply::from_value(&Call::GetWrapped(id), other).is_err());
        // Values never show their contents.
        assert_eq!(format!("{:?}", Value::str("secret")), "Str(<6 bytes>)");
        assert_eq!(
            format!("{:?}", Value::bytes(*b"\x01\x02\x03")),
            "Bytes(<3 bytes>)"
        );
    }
}
