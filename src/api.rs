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
//!         Ok(Status { keys: 0, version: "0".into(), suite: "-".into(), storage: "-".into(), strength: 128 })
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

use crate::{Dek, Error, ErrorCode, Kek, KeyId, Result, Strength, WrappedDek};

/// What a key server says about itself (the `status` call).
///
/// ```
/// let s = keyserver::Status {
///     keys: 3,
///     version: "0.1.0".into(),
///     suite: "rustcrypto".into(),
///     storage: "memory".into(),
///     strength: 128,
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
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait KeyService: Send + Sync {
    /// `generate([strength])`: make a KEK, store its wrapped DEK, return the
    /// KEK. `None` uses the server's configured strength.
    async fn generate(&self, strength: Option<Strength>) -> Result<Kek>;

    /// `get_key(kek)`: server-side unwrap; the DEK of this KEK.
    async fn get_key(&self, kek: &Kek) -> Result<Dek>;

    /// `get_wrapped(key_id)`: the stored record, for client-side unwrap (the
    /// KEK never leaves the client).
    async fn get_wrapped(&self, key_id: &KeyId) -> Result<WrappedDek>;

    /// `contains(key_id)`: whether a key is stored under `key_id`.
    async fn contains(&self, key_id: &KeyId) -> Result<bool>;

    /// `status()`: what the server says about itself.
    async fn status(&self) -> Result<Status>;

    /// What the service holds and does now, for monitoring (`/metrics`).
    /// A service that keeps none of these answers zeros (the default).
    fn gauges(&self) -> Gauges {
        Gauges::default()
    }

    /// Runs one [`Call`] and gives its [`Reply`]: the one place a call meets
    /// the typed methods above.
    async fn call(&self, call: Call) -> Result<Reply> {
        Ok(match call {
            Call::Generate(strength) => Reply::Kek(self.generate(strength).await?),
            Call::GetKey(kek) => Reply::Dek(self.get_key(&kek).await?),
            Call::GetWrapped(id) => Reply::Wrapped(self.get_wrapped(&id).await?),
            Call::Contains(id) => Reply::Bool(self.contains(&id).await?),
            Call::Status => Reply::Status(self.status().await?),
        })
    }
}

/// One call of the wire API, with its parameters parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `generate([strength])`.
    Generate(Option<Strength>),
    /// `get_key(kek)`.
    GetKey(Kek),
    /// `get_wrapped(key_id)`.
    GetWrapped(KeyId),
    /// `contains(key_id)`.
    Contains(KeyId),
    /// `status()`.
    Status,
}

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
}

impl Shape {
    /// The type's name as docs/PROTOCOL.md writes it.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Int => "int",
            Shape::Bool => "boolean",
            Shape::Str => "string",
            Shape::Bytes => "base64",
            Shape::Struct(_) => "struct",
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
    /// Whether a call of it costs real CPU (key generation, an RSA
    /// decryption): `generate` and `get_key`. A batch may hold only a few.
    ///
    /// ```
    /// assert!(keyserver::api::method("get_key").unwrap().is_expensive());
    /// assert!(!keyserver::api::method("status").unwrap().is_expensive());
    /// ```
    pub fn is_expensive(&self) -> bool {
        self.name == GENERATE.name || self.name == GET_KEY.name
    }

    /// Whether it changes what the server stores (`generate`): such a call
    /// is answered only once its audit line is on disk.
    pub fn changes_state(&self) -> bool {
        self.name == GENERATE.name
    }

    /// The parameter list as a protocol writes it: `open` and `close` are
    /// `(`/`)` for XML-RPC and `[`/`]` for JSON-RPC, so the signature of
    /// `generate` reads `() or (strength: int)` on XML-RPC.
    ///
    /// ```
    /// let generate = keyserver::api::method("generate").unwrap();
    /// assert_eq!(generate.signature('[', ']'), "[] or [strength: int]");
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
    params: &[Param {
        name: "strength",
        shape: Shape::Int,
        optional: true,
    }],
    result: Shape::Str,
    help: "generate([strength]) -> string: creates a key-encryption key (KEK) of the given \
           security strength (128, 192 or 256; default: the server's), stores its wrapped data \
           key, and returns the private KEK as PKCS#8 PEM. The server keeps no copy.",
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
    result: Shape::Struct(&[
        ("keys", Shape::Int),
        ("storage", Shape::Str),
        ("strength", Shape::Int),
        ("suite", Shape::Str),
        ("version", Shape::Str),
    ]),
    help: "status() -> struct {keys, version, suite, storage, strength}: what the server says \
           about itself.",
};

/// The method table: every wire method, once.
pub const METHODS: &[Method] = &[GENERATE, GET_KEY, GET_WRAPPED, CONTAINS, STATUS];

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
            Call::Generate(_) => &GENERATE,
            Call::GetKey(_) => &GET_KEY,
            Call::GetWrapped(_) => &GET_WRAPPED,
            Call::Contains(_) => &CONTAINS,
            Call::Status => &STATUS,
        }
    }

    /// The key this call is about, if any (for logs and typed errors).
    pub fn key_id(&self) -> Option<KeyId> {
        match self {
            Call::GetKey(kek) => Some(kek.id()),
            Call::GetWrapped(id) | Call::Contains(id) => Some(*id),
            Call::Generate(_) | Call::Status => None,
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
    /// assert_eq!(call, Call::Generate(Some(keyserver::Strength::S192)));
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
        let first = params.into_iter().next();
        let text = |value: Option<Value>| match value {
            Some(Value::Str(s)) => Ok(s),
            _ => Err(method.invalid_params(brackets.0, brackets.1)),
        };
        match method.name {
            n if n == GENERATE.name => match first {
                Some(Value::Int(bits)) => parse_strength(bits).map(|s| Call::Generate(Some(s))),
                _ => Ok(Call::Generate(None)),
            },
            n if n == GET_KEY.name => Kek::from_pem(&text(first)?).map(Call::GetKey),
            n if n == GET_WRAPPED.name => text(first)?.parse().map(Call::GetWrapped),
            n if n == CONTAINS.name => text(first)?.parse().map(Call::Contains),
            _ => Ok(Call::Status),
        }
    }

    /// The positional parameters of this call, for a client to send.
    pub fn into_params(self) -> Vec<Value> {
        match self {
            Call::Generate(None) | Call::Status => Vec::new(),
            Call::Generate(Some(s)) => vec![Value::Int(i64::from(s.bits()))],
            Call::GetKey(kek) => vec![Value::Str(kek.to_pem())],
            Call::GetWrapped(id) | Call::Contains(id) => vec![Value::str(id.to_string())],
        }
    }
}

/// Parses the `strength` parameter of `generate`.
fn parse_strength(bits: i64) -> Result<Strength> {
    u32::try_from(bits)
        .map_err(|_| Error::policy("strength must be 128, 192 or 256"))
        .and_then(Strength::from_bits)
}

/// The client's error for an answer that does not fit the method table.
pub(crate) fn garbage(method: &Method) -> Error {
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
            (Call::Generate(_), Value::Str(pem)) => {
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

    const KEK_3072: &str = include_str!("../tests/fixtures/kek-rsa3072.pem");

    #[test]
    fn every_call_survives_its_parameters() {
        let kek = Kek::from_pem(KEK_3072).expect("fixture"); // ok: test fixture
        let id = kek.id();
        let calls = [
            Call::Generate(None),
            Call::Generate(Some(Strength::S256)),
            Call::GetKey(kek),
            Call::GetWrapped(id),
            Call::Contains(id),
            Call::Status,
        ];
        for call in calls {
            let name = call.method().name;
            let params = call.clone().into_params();
            assert!(call.method().accepts(&params), "{name}");
            let back = Call::from_params(name, params, ('(', ')')).expect("parses"); // ok: test
            assert_eq!(back, call);
        }
        assert_eq!(METHODS.len(), 5);
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
