//! The public conformance kit on this transport, from its own crate: the
//! client against the `keyserver` crate's listener serving this crate's
//! endpoint, on a real loopback socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyserver::backends::RustCrypto;
use keyserver::transports::{HttpServer, ServerConfig};

keyserver::transport_conformance!(jsonrpc, RustCrypto::new(), |s| async move {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let http = HttpServer::start(s, config).await.unwrap();
    let t = keyserver_jsonrpc::JsonRpc::new(&http.url()).unwrap();
    (t, http)
});
