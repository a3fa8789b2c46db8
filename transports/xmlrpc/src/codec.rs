//! The XML-RPC codec: the protocol-neutral [`Value`]s of the method table to
//! and from dxr's values, and calls and answers to and from XML. Used by the
//! `XmlRpc` client and the `/RPC2` endpoint alike.

use dxr::{Fault, FaultResponse, MethodCall, MethodResponse};
use zeroize::{Zeroize, Zeroizing};

use keyserver_core::api::{Call, Reply, Value};
use keyserver_core::{Error, Result};

/// How XML-RPC error messages write a parameter list: `(kek: string)`.
pub(crate) const BRACKETS: (char, char) = ('(', ')');

/// A neutral value as XML-RPC. Integers are `<i4>`: a count beyond 2^31-1
/// is sent as 2^31-1 (Python's `xmlrpc.client` reads nothing larger).
pub(crate) fn to_xml(value: Value) -> dxr::Value {
    match value {
        Value::Int(i) => {
            dxr::Value::Integer(i32::try_from(i).unwrap_or(if i < 0 { i32::MIN } else { i32::MAX }))
        }
        Value::Bool(b) => dxr::Value::Boolean(b),
        Value::Str(mut s) => dxr::Value::String(std::mem::take(&mut *s)),
        Value::Bytes(mut b) => dxr::Value::Base64(std::mem::take(&mut *b)),
        Value::Struct(map) => {
            dxr::Value::Struct(map.into_iter().map(|(k, v)| (k, to_xml(v))).collect())
        }
        Value::Array(items) => dxr::Value::Array(items.into_iter().map(to_xml).collect()),
    }
}

/// An XML-RPC value as a neutral one, moving strings and bytes out (so the
/// dxr value keeps no copy); `None` for types the method table never uses.
pub(crate) fn from_xml(value: &mut dxr::Value) -> Option<Value> {
    Some(match value {
        dxr::Value::Integer(i) => Value::Int(i64::from(*i)),
        dxr::Value::Boolean(b) => Value::Bool(*b),
        dxr::Value::String(s) => Value::Str(Zeroizing::new(std::mem::take(s))),
        dxr::Value::Base64(b) => Value::Bytes(Zeroizing::new(std::mem::take(b))),
        // Members of types the table never uses are left out (a newer
        // server may send more); the shape check decides what is missing.
        dxr::Value::Struct(map) => Value::Struct(
            map.iter_mut()
                .filter_map(|(k, v)| Some((k.clone(), from_xml(v)?)))
                .collect(),
        ),
        dxr::Value::Array(items) => {
            Value::Array(items.iter_mut().map(from_xml).collect::<Option<_>>()?)
        }
        _ => return None,
    })
}

/// Wipes the strings and bytes held in an XML-RPC value.
pub(crate) fn wipe(value: &mut dxr::Value) {
    match value {
        dxr::Value::String(s) => s.zeroize(),
        dxr::Value::Base64(b) => b.zeroize(),
        dxr::Value::Struct(map) => map.values_mut().for_each(wipe),
        dxr::Value::Array(items) => items.iter_mut().for_each(wipe),
        _ => {}
    }
}

/// The call's parameters as neutral values; for any that has no neutral
/// form, the method's "invalid parameters" error (or "unknown method").
pub(crate) fn params(name: &str, params: &mut [dxr::Value]) -> Result<Vec<Value>> {
    let converted: Option<Vec<Value>> = params.iter_mut().map(from_xml).collect();
    params.iter_mut().for_each(wipe);
    converted.ok_or_else(|| match keyserver_core::api::method(name) {
        Some(method) => method.invalid_params(BRACKETS.0, BRACKETS.1),
        None => keyserver_core::api::unknown_method(),
    })
}

/// A `methodCall` document for `call`. The returned text is wiped on drop
/// (it may hold a KEK).
pub(crate) fn encode_call(call: Call) -> Result<Zeroizing<String>> {
    let name = call.method().name;
    let mut request = MethodCall {
        name: name.into(),
        params: call.into_params().into_iter().map(to_xml).collect(),
    };
    let xml = request.to_xml().map(Zeroizing::new);
    request.params.iter_mut().for_each(wipe);
    xml.map_err(|_| Error::Internal("cannot encode an XML-RPC request".into()))
}

/// A `methodResponse` document holding `value`.
pub(crate) fn encode_value(value: dxr::Value) -> Result<String> {
    let mut response = MethodResponse { value };
    let xml = response
        .to_xml()
        .map_err(|_| Error::Internal("cannot encode the response".into()));
    wipe(&mut response.value);
    xml
}

/// dxr's parse errors hold a copy of the whole document (a request with a
/// KEK, an answer with a DEK): wiped before it is dropped.
fn wipe_error(mut error: dxr::Error) {
    if let dxr::Error::InvalidData { error } = &mut error {
        error.zeroize();
    }
}

/// Parses an XML-RPC method call; the parser's error (which copies the
/// document) is wiped, never shown.
pub(crate) fn parse_call(text: &str) -> Option<MethodCall<'static>> {
    MethodCall::from_xml(text).map_err(wipe_error).ok()
}

/// A fault document.
pub(crate) fn encode_fault(code: i32, message: String) -> String {
    FaultResponse {
        fault: Fault::new(code, message),
    }
    .to_xml()
    .unwrap_or_default()
}

/// The server's answer to `call`: its reply, or the typed error of its fault.
///
/// # Errors
/// The server's error ([`Error::from_wire`]), or [`Error::Transport`] for a
/// document that is neither a response nor a fault, or does not fit `call`.
pub(crate) fn decode_answer(text: &str, call: &Call) -> Result<Reply> {
    match MethodResponse::from_xml(text) {
        Ok(mut response) => {
            let value = from_xml(&mut response.value);
            wipe(&mut response.value);
            return match value {
                Some(value) => Reply::from_value(call, value),
                None => Err(keyserver_core::api::garbage(call.method())),
            };
        }
        Err(e) => wipe_error(e),
    }
    match FaultResponse::from_xml(text) {
        Ok(f) => Err(Error::from_wire(
            f.fault.code(),
            f.fault.string().to_string(),
            call.key_id(),
        )),
        Err(e) => {
            wipe_error(e);
            Err(garbage())
        }
    }
}

pub(crate) fn garbage() -> Error {
    Error::Transport {
        message: "the server's answer is not a valid XML-RPC response".into(),
        source: None,
    }
}

/// The `/RPC2` endpoint's decoder from a raw body to a call of the wire API,
/// for the fuzz targets: UTF-8, the XML-RPC method call, then the method
/// table's parameter checks. `system.*` methods are the endpoint's own and
/// end here as their name.
#[cfg(feature = "server")]
pub fn fuzz_request(body: &[u8]) -> Result<Call> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::protocol(keyserver_core::ErrorCode::ParseError, "not UTF-8"))?;
    let mut call = parse_call(text).ok_or_else(|| {
        Error::protocol(keyserver_core::ErrorCode::ParseError, "not a methodCall")
    })?;
    let name = call.name.to_string();
    let params = params(&name, &mut call.params);
    call.params.iter_mut().for_each(wipe);
    Call::from_params(&name, params?, BRACKETS)
}
