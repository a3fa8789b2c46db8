//! A call and its answer as values ([`Call`], [`Reply`]), and their
//! translation to and from the protocol-neutral [`Value`]s of the method
//! table.

use std::collections::BTreeMap;

use crate::lifecycle::{Change, KeyFilter, KeyInfo, KeyPage, Target};
use crate::{Dek, Error, ErrorCode, Kek, KekAlg, KeyId, Result, Strength, WrappedDek};

use super::table::*;
use super::{default_kek_alg, parse_rfc3339, rfc3339, Status, Value};

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
