//! The `/RPC2` endpoint: XML-RPC requests in, through the codec and the
//! dispatcher, XML-RPC answers out. Besides the wire API it answers the
//! introspection methods Python's `xmlrpc.client` users expect:
//! `system.multicall`, `system.listMethods` and `system.methodHelp`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::codec::{self, BRACKETS};
use super::XMLRPC_PATH;
use keyserver_core::api;
use keyserver_core::{Error, ErrorCode, Result};
use keyserver_http::server::body::{parse_body, read_body, wiped_body, RequestBody};
use keyserver_http::server::dispatch::{Dispatch, MAX_BATCH};

const MULTICALL: &str = "system.multicall";
/// Most XML tags (counted as `<`) a request may hold, checked before it is
/// parsed: memory stays bounded by this, not by 1 MiB of tiny values.
const MAX_TAGS: usize = 16_384;
const LIST_METHODS: &str = "system.listMethods";
const METHOD_HELP: &str = "system.methodHelp";

/// The introspection methods and their help texts.
const SYSTEM: [(&str, &str); 3] = [
    (
        MULTICALL,
        "system.multicall(calls) -> array: runs an array of {methodName, params} structs in \
         order; each answer is a one-element array holding the result, or a fault struct \
         {faultCode, faultString}. At most 64 calls; no nested system.multicall.",
    ),
    (
        LIST_METHODS,
        "system.listMethods() -> array of strings: the methods this server answers.",
    ),
    (
        METHOD_HELP,
        "system.methodHelp(name) -> string: what a method does, its parameters and result.",
    ),
];

pub(crate) fn router(dispatch: Arc<Dispatch>) -> Router {
    Router::new().route(
        XMLRPC_PATH,
        post(
            move |caller: Option<axum::Extension<keyserver_core::api::Caller>>,
                  headers: HeaderMap,
                  body: Body| {
                let dispatch = dispatch.bind(caller.map(|axum::Extension(c)| c));
                async move { handle(&dispatch, &headers, body).await }
            },
        ),
    )
}

fn xml_response(xml: String) -> Response {
    let mut response = (StatusCode::OK, wiped_body(xml)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

/// A fault. Faults travel with HTTP 200, as XML-RPC clients expect.
fn fault(error: &Error) -> Response {
    xml_response(codec::encode_fault(error.code(), error.to_string()))
}

async fn handle(dispatch: &Dispatch, headers: &HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    let deadline = dispatch.deadline();
    let refused = |e: Error| {
        dispatch.log_refused("xmlrpc", "-", &e, start);
        fault(&e)
    };
    let body = match read_body(headers, body, dispatch.body_limits(deadline)).await {
        Ok(body) => body,
        Err(e) => return refused(e),
    };
    // Never echo the parser's error: it quotes the request, which may hold
    // a KEK (the codec wipes it). A large body is parsed on the blocking
    // pool, so the async workers keep serving.
    let parse = |body: RequestBody| match std::str::from_utf8(&body) {
        // Bounded before the parser builds a tree of values: a well-formed
        // request of 64 calls needs a few thousand tags.
        Ok(_) if body.iter().filter(|b| **b == b'<').count() > MAX_TAGS => Err(Error::protocol(
            ErrorCode::InvalidRequest,
            format!("invalid request: more than {MAX_TAGS} XML tags"),
        )),
        Err(_) => Err(Error::protocol(
            ErrorCode::ParseError,
            "the request is not UTF-8",
        )),
        Ok(text) => codec::parse_call(text).ok_or_else(|| {
            Error::protocol(
                ErrorCode::ParseError,
                "the request is not a well-formed XML-RPC methodCall",
            )
        }),
    };
    let parsed = parse_body(body, deadline, parse).await;
    let mut call = match parsed {
        Ok(call) => call,
        Err(e) => return refused(e),
    };
    let name = call.name.to_string();
    let answer = match name.as_str() {
        MULTICALL => {
            let answer = multicall(dispatch, &mut call.params, deadline).await;
            if let Err(e) = &answer {
                dispatch.log_refused("xmlrpc", MULTICALL, e, start);
            }
            answer
        }
        LIST_METHODS | METHOD_HELP => {
            let answer = if name == LIST_METHODS {
                list_methods(&call.params)
            } else {
                method_help(&call.params)
            };
            dispatch.log_request("xmlrpc", &name, None, &answer, start);
            answer
        }
        _ => one(dispatch, &name, &mut call.params, deadline).await,
    };
    call.params.iter_mut().for_each(codec::wipe);
    match answer.and_then(codec::encode_value) {
        Ok(xml) => xml_response(xml),
        Err(e) => fault(&e),
    }
}

/// One call of the wire API.
async fn one(
    dispatch: &Dispatch,
    name: &str,
    params: &mut [dxr::Value],
    deadline: tokio::time::Instant,
) -> Result<dxr::Value> {
    let params = codec::params(name, params);
    let value = dispatch
        .run_named("xmlrpc", name, params, BRACKETS, deadline)
        .await?;
    Ok(codec::to_xml(value))
}

/// `system.multicall`: the calls in order, each answered on its own, with the
/// same limits as a JSON-RPC batch.
async fn multicall(
    dispatch: &Dispatch,
    params: &mut [dxr::Value],
    deadline: tokio::time::Instant,
) -> Result<dxr::Value> {
    let invalid = || {
        Error::protocol(
            ErrorCode::InvalidParams,
            "invalid parameters: expected (calls: array of {methodName: string, params: array})",
        )
    };
    let [dxr::Value::Array(calls)] = params else {
        return Err(invalid());
    };
    if calls.is_empty() || calls.len() > MAX_BATCH {
        return Err(Error::protocol(
            ErrorCode::InvalidRequest,
            format!("a system.multicall holds 1 to {MAX_BATCH} calls"),
        ));
    }
    dispatch.check_batch(calls.iter().filter_map(|entry| match entry {
        dxr::Value::Struct(members) => match members.get("methodName") {
            Some(dxr::Value::String(name)) => Some(name.as_str()),
            _ => None,
        },
        _ => None,
    }))?;
    let mut answers = Vec::with_capacity(calls.len());
    for entry in calls.iter_mut() {
        let answer = match entry {
            dxr::Value::Struct(members) if members.len() == 2 => {
                let name = match members.get("methodName") {
                    Some(dxr::Value::String(name)) => name.clone(),
                    _ => String::new(),
                };
                match members.get_mut("params") {
                    Some(dxr::Value::Array(params)) if name.starts_with("system.") => {
                        params.iter_mut().for_each(codec::wipe);
                        Err(Error::protocol(
                            ErrorCode::InvalidRequest,
                            "system methods cannot be called inside system.multicall",
                        ))
                    }
                    Some(dxr::Value::Array(params)) if !name.is_empty() => {
                        one(dispatch, &name, params, deadline).await
                    }
                    _ => Err(invalid()),
                }
            }
            _ => Err(invalid()),
        };
        answers.push(match answer {
            Ok(value) => dxr::Value::Array(vec![value]),
            Err(e) => dxr::Value::Struct(
                [
                    ("faultCode".to_string(), dxr::Value::Integer(e.code())),
                    ("faultString".to_string(), dxr::Value::String(e.to_string())),
                ]
                .into(),
            ),
        });
    }
    Ok(dxr::Value::Array(answers))
}

/// `system.listMethods()`: the wire API's methods, then the system ones.
fn list_methods(params: &[dxr::Value]) -> Result<dxr::Value> {
    if !params.is_empty() {
        return Err(Error::protocol(
            ErrorCode::InvalidParams,
            "invalid parameters: expected ()",
        ));
    }
    let names = api::METHODS
        .iter()
        .map(|m| m.name)
        .chain(SYSTEM.iter().map(|(name, _)| *name));
    Ok(dxr::Value::Array(
        names
            .map(|name| dxr::Value::String(name.to_string()))
            .collect(),
    ))
}

/// `system.methodHelp(name)`.
fn method_help(params: &[dxr::Value]) -> Result<dxr::Value> {
    let [dxr::Value::String(name)] = params else {
        return Err(Error::protocol(
            ErrorCode::InvalidParams,
            "invalid parameters: expected (name: string)",
        ));
    };
    let help = api::method(name)
        .map(|m| m.help)
        .or_else(|| SYSTEM.iter().find(|(n, _)| n == name).map(|(_, h)| *h))
        .ok_or_else(api::unknown_method)?;
    Ok(dxr::Value::String(help.to_string()))
}
