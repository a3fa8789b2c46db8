//! The JSON-RPC codec: the protocol-neutral [`Value`]s of the method table to
//! and from JSON (bytes as base64 strings), guided by the table's shapes.
//! Used by the `JsonRpc` client and the `/jsonrpc` endpoint alike.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{Map, Value as Json};
use zeroize::{Zeroize, Zeroizing};

use crate::api::{Call, Method, Reply, Shape, Value};
use crate::{Error, Result};

/// How JSON-RPC error messages write a parameter list: `[kek: string]`.
pub(crate) const BRACKETS: (char, char) = ('[', ']');

/// A neutral value as JSON.
pub(crate) fn to_json(value: Value) -> Json {
    match value {
        Value::Int(i) => Json::from(i),
        Value::Bool(b) => Json::Bool(b),
        Value::Str(mut s) => Json::String(std::mem::take(&mut *s)),
        Value::Bytes(b) => Json::String(BASE64.encode(&*b)),
        Value::Struct(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| (k, to_json(v)))
                .collect::<Map<String, Json>>(),
        ),
    }
}

/// A JSON value of the given shape as a neutral one, moving strings out;
/// `None` if it does not have that shape. Struct members the shape does not
/// name are ignored (a newer server may send more).
pub(crate) fn from_json(value: &mut Json, shape: Shape) -> Option<Value> {
    Some(match (shape, value) {
        (Shape::Int, Json::Number(n)) => Value::Int(n.as_i64()?),
        (Shape::Bool, Json::Bool(b)) => Value::Bool(*b),
        (Shape::Str, Json::String(s)) => Value::Str(Zeroizing::new(std::mem::take(s))),
        (Shape::Bytes, Json::String(s)) => {
            let bytes = BASE64.decode(s.as_bytes()).ok().map(Zeroizing::new);
            s.zeroize();
            Value::Bytes(bytes?)
        }
        (Shape::Struct(members), Json::Object(map)) => {
            let mut out = BTreeMap::new();
            for (name, shape) in members {
                out.insert(name.to_string(), from_json(map.get_mut(*name)?, *shape)?);
            }
            Value::Struct(out)
        }
        _ => return None,
    })
}

/// Wipes the strings held in a JSON value.
pub(crate) fn wipe(value: &mut Json) {
    match value {
        Json::String(s) => s.zeroize(),
        Json::Array(items) => items.iter_mut().for_each(wipe),
        Json::Object(map) => map.values_mut().for_each(wipe),
        _ => {}
    }
}

/// The parameters of a call to `method`, positional (`[x]`) or named
/// (`{"name": x}`), as neutral values, without ever quoting them back (they
/// may hold a KEK).
///
/// # Errors
/// The method's "invalid parameters" error for anything that does not fit.
pub(crate) fn params(method: &Method, params: Option<&mut Json>) -> Result<Vec<Value>> {
    let bad = || method.invalid_params(BRACKETS.0, BRACKETS.1);
    let mut none = Json::Null;
    let items: Vec<&mut Json> = match params.unwrap_or(&mut none) {
        Json::Null => Vec::new(),
        Json::Array(items) if items.len() <= method.params.len() => items.iter_mut().collect(),
        Json::Object(map) => {
            // Named parameters in the table's order; a gap is an error.
            let mut slots: Vec<Option<&mut Json>> = method.params.iter().map(|_| None).collect();
            for (name, value) in map.iter_mut() {
                let index = method.params.iter().position(|p| p.name == name);
                let slot = index.and_then(|i| slots.get_mut(i)).ok_or_else(bad)?;
                *slot = Some(value);
            }
            let given = slots.iter().take_while(|s| s.is_some()).count();
            if slots[given..].iter().any(Option::is_some) {
                return Err(bad());
            }
            slots.into_iter().flatten().collect()
        }
        _ => return Err(bad()),
    };
    let values: Option<Vec<Value>> = items
        .into_iter()
        .zip(method.params)
        .map(|(v, p)| from_json(v, p.shape))
        .collect();
    values.ok_or_else(bad)
}

/// The reply to `call` from the `result` member of a JSON-RPC response.
///
/// # Errors
/// [`Error::Transport`] if it does not fit the method's result.
pub(crate) fn reply(call: &Call, mut result: Json) -> Result<Reply> {
    let value = from_json(&mut result, call.method().result);
    wipe(&mut result);
    match value {
        Some(value) => Reply::from_value(call, value),
        None => Err(crate::api::garbage(call.method())),
    }
}

pub(crate) fn garbage() -> Error {
    Error::Transport {
        message: "the server's answer is not a valid JSON-RPC response".into(),
        source: None,
    }
}

/// The `/jsonrpc` endpoint's decoder from a raw body to calls of the wire
/// API, for the fuzz targets: JSON, then each request object of a single
/// call or a batch, through the method table's parameter checks.
#[cfg(feature = "transport-jsonrpc-server")]
pub fn fuzz_request(body: &[u8]) -> Vec<Result<Call>> {
    let Ok(mut request) = serde_json::from_slice::<Json>(body) else {
        return vec![Err(Error::protocol(
            crate::ErrorCode::ParseError,
            "not JSON",
        ))];
    };
    let mut calls = Vec::new();
    let one = |object: &mut Json| {
        let name = object
            .get("method")
            .and_then(Json::as_str)
            .map(str::to_owned);
        let Some(method) = name.as_deref().and_then(crate::api::method) else {
            return Err(crate::api::unknown_method());
        };
        let values = params(method, object.get_mut("params"))?;
        Call::from_params(method.name, values, BRACKETS)
    };
    match &mut request {
        Json::Array(batch) => {
            for object in batch.iter_mut() {
                calls.push(one(object));
            }
        }
        single => calls.push(one(single)),
    }
    wipe(&mut request);
    calls
}
