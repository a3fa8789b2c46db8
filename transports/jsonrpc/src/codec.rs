//! The JSON-RPC codec: the protocol-neutral [`Value`]s of the method table to
//! and from JSON (bytes as base64 strings), guided by the table's shapes.
//! Used by the `JsonRpc` client and the `/jsonrpc` endpoint alike.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{Map, Value as Json};
use zeroize::{Zeroize, Zeroizing};

use keyserver_core::api::{Call, Method, Reply, Shape, Value};
use keyserver_core::{Error, Result};

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
        Value::Array(items) => Json::Array(items.into_iter().map(to_json).collect()),
    }
}

/// Writes a neutral value as compact JSON without building the tree
/// [`to_json`] makes: the bytes serde_json writes for that tree (objects in
/// the same order, bytes as the same base64 strings; tested against it),
/// with bytes base64-encoded straight into `out` through a small buffer
/// that is wiped, and a string that needs no escape copied as it is.
#[cfg(feature = "server")]
pub(crate) fn write_json(out: &mut impl std::io::Write, value: &Value) -> std::io::Result<()> {
    match value {
        Value::Int(i) => write!(out, "{i}"),
        Value::Bool(b) => out.write_all(if *b { b"true" } else { b"false" }),
        Value::Str(text) => write_str(out, text),
        Value::Bytes(bytes) => write_base64(out, bytes),
        Value::Struct(map) => {
            out.write_all(b"{")?;
            for (i, (name, member)) in map.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_str(out, name)?;
                out.write_all(b":")?;
                write_json(out, member)?;
            }
            out.write_all(b"}")
        }
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_json(out, item)?;
            }
            out.write_all(b"]")
        }
    }
}

/// `bytes` as a JSON string of their base64 text, encoded through a small
/// buffer that is wiped.
#[cfg(feature = "server")]
pub(crate) fn write_base64(out: &mut impl std::io::Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(b"\"")?;
    // 768 bytes make 1,024 characters and no padding but at the end.
    let mut chunk = Zeroizing::new([0u8; 1024]);
    for piece in bytes.chunks(768) {
        let n = BASE64
            .encode_slice(piece, &mut chunk[..])
            .map_err(std::io::Error::other)?;
        out.write_all(&chunk[..n])?;
    }
    out.write_all(b"\"")
}

/// A reply as JSON: the bytes [`write_json`] writes for its neutral value
/// (tested through the endpoint), with a stored record (`get_wrapped`, the
/// cheapest and most frequent call) written from the record itself rather
/// than through a struct of copies.
#[cfg(feature = "server")]
pub(crate) fn write_reply(out: &mut impl std::io::Write, reply: Reply) -> std::io::Result<()> {
    match reply {
        Reply::Wrapped(record) => {
            // The members of its neutral struct, in their (sorted) order.
            write!(out, r#"{{"key_id":"{}","record":"#, record.key_id())?;
            write_base64(out, &record.encode())?;
            out.write_all(b"}")
        }
        other => write_json(out, &other.into_value()),
    }
}

/// A JSON string: as it is when no byte needs an escape (serde_json escapes
/// control characters, `"` and `\` only), else as serde_json escapes it.
#[cfg(feature = "server")]
fn write_str(out: &mut impl std::io::Write, text: &str) -> std::io::Result<()> {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.write_all(b"\"")?;
        out.write_all(text.as_bytes())?;
        out.write_all(b"\"")
    } else {
        serde_json::to_writer(out, text).map_err(std::io::Error::other)
    }
}

/// A JSON value taken as it is (for [`Shape::Any`]): integers, booleans,
/// strings, objects and arrays; `None` for null and non-integer numbers.
fn any_json(value: &mut Json) -> Option<Value> {
    Some(match value {
        Json::Number(n) => Value::Int(n.as_i64()?),
        Json::Bool(b) => Value::Bool(*b),
        Json::String(s) => Value::Str(Zeroizing::new(std::mem::take(s))),
        // A member this reader cannot represent (a null, a fraction) is
        // left out, as a member it does not know: a newer server may send
        // one, and the members read by name still come through.
        Json::Object(map) => Value::Struct(
            map.iter_mut()
                .filter_map(|(k, v)| Some((k.clone(), any_json(v)?)))
                .collect::<BTreeMap<_, _>>(),
        ),
        Json::Array(items) => Value::Array(items.iter_mut().map(any_json).collect::<Option<_>>()?),
        Json::Null => return None,
    })
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
        (Shape::Array(shape), Json::Array(items)) => Value::Array(
            items
                .iter_mut()
                .map(|item| from_json(item, *shape))
                .collect::<Option<_>>()?,
        ),
        (Shape::Any, value) => any_json(value)?,
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
        None => Err(keyserver_core::api::garbage(call.method())),
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
#[cfg(feature = "server")]
pub fn fuzz_request(body: &[u8]) -> Vec<Result<Call>> {
    let Ok(mut request) = serde_json::from_slice::<Json>(body) else {
        return vec![Err(Error::protocol(
            keyserver_core::ErrorCode::ParseError,
            "not JSON",
        ))];
    };
    let mut calls = Vec::new();
    let one = |object: &mut Json| {
        let name = object
            .get("method")
            .and_then(Json::as_str)
            .map(str::to_owned);
        let Some(method) = name.as_deref().and_then(keyserver_core::api::method) else {
            return Err(keyserver_core::api::unknown_method());
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

/// Most JSON values (objects, arrays, scalars and member names) a request
/// may hold: a batch of 64 calls needs well under a thousand. Checked before
/// the request is built in memory, so that 1 MiB of tiny objects costs a
/// scan, not a hundred megabytes of maps.
#[cfg(feature = "server")]
pub(crate) const MAX_VALUES: usize = 4096;

/// Why [`check_values`] refused a body.
#[cfg(feature = "server")]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not JSON.
    Syntax,
    /// More than the allowed number of values.
    TooMany,
}

/// Scans `body` as JSON without building anything, counting its values.
#[cfg(feature = "server")]
pub(crate) fn check_values(body: &[u8], max: usize) -> std::result::Result<(), Refused> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::cell::Cell;

    #[derive(Clone, Copy)]
    struct Count<'a> {
        left: &'a Cell<usize>,
        exceeded: &'a Cell<bool>,
    }

    impl Count<'_> {
        fn tick<E: serde::de::Error>(&self) -> std::result::Result<(), E> {
            match self.left.get().checked_sub(1) {
                Some(left) => {
                    self.left.set(left);
                    Ok(())
                }
                None => {
                    self.exceeded.set(true);
                    Err(E::custom("too many values"))
                }
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Count<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Count<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> std::result::Result<(), E> {
            self.tick()
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> std::result::Result<(), E> {
            self.tick()
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> std::result::Result<(), E> {
            self.tick()
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> std::result::Result<(), E> {
            self.tick()
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> std::result::Result<(), E> {
            self.tick()
        }
        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<(), E> {
            self.tick()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
            self.tick::<A::Error>()?;
            while seq.next_element_seed(self)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
            self.tick::<A::Error>()?;
            while map.next_key_seed(self)?.is_some() {
                map.next_value_seed(self)?;
            }
            Ok(())
        }
    }

    let (left, exceeded) = (Cell::new(max), Cell::new(false));
    let mut de = serde_json::Deserializer::from_slice(body);
    let scanned = Count {
        left: &left,
        exceeded: &exceeded,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match scanned {
        Ok(()) => Ok(()),
        Err(_) if exceeded.get() => Err(Refused::TooMany),
        Err(_) => Err(Refused::Syntax),
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use super::*;

    #[test]
    fn values_are_counted_without_building_them() {
        let call = br#"{"jsonrpc":"2.0","method":"contains","params":["ab"],"id":1}"#;
        // object + 4 names + 4 values + 1 array element (the array is one).
        assert_eq!(check_values(call, 10), Ok(()));
        assert_eq!(check_values(call, 9), Err(Refused::TooMany));
        assert_eq!(check_values(b"{\"a\":", 100), Err(Refused::Syntax));
        assert_eq!(check_values(b"[1] 2", 100), Err(Refused::Syntax));
        // 1 MiB of tiny objects: refused after MAX_VALUES, having built nothing.
        let mut flood = b"[".to_vec();
        while flood.len() < 1 << 20 {
            flood.extend_from_slice(b"{\"\":0},");
        }
        flood.extend_from_slice(b"{}]");
        assert_eq!(check_values(&flood, MAX_VALUES), Err(Refused::TooMany));
    }

    #[test]
    fn values_are_written_as_serde_json_writes_their_tree() {
        let mut values = vec![
            Value::Int(0),
            Value::Int(-1),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::Bool(true),
            Value::Bool(false),
            Value::str(""),
            Value::str("plain text"),
            Value::str("quote \" backslash \\ slash / tab \t nul \0 del \u{7f} c1 \u{85}"),
            Value::str("\u{e9}\u{43a}\u{1f511} \u{2028}"),
            Value::Struct(BTreeMap::new()),
            Value::Array(Vec::new()),
        ];
        for len in [0, 1, 2, 3, 4, 767, 768, 769, 1536, 2000] {
            values.push(Value::bytes(
                (0..len).map(|i| (i * 7 % 256) as u8).collect::<Vec<u8>>(),
            ));
        }
        let nested = Value::Struct(BTreeMap::from([
            ("b".to_string(), Value::Array(values.clone())),
            ("a \"q\"".to_string(), Value::Int(5)),
            (
                "\u{e9}".to_string(),
                Value::Struct(BTreeMap::from([("x".to_string(), Value::Bool(true))])),
            ),
        ]));
        values.push(nested);
        for value in values {
            let mut ours = Vec::new();
            write_json(&mut ours, &value).unwrap();
            let theirs = serde_json::to_vec(&to_json(value.clone())).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(theirs).unwrap(),
                "{value:?}"
            );
        }
    }
}
