//! Transport conformance of the in-process transport through the public kit
//! (`keyserver::testing::transport`); XML-RPC and JSON-RPC run it from their
//! own crates (`transports/*/tests/conformance.rs`). Also the server and
//! listener helpers the other test modules share.

#![allow(dead_code)]

use std::sync::Arc;

use keyserver::backends::{MemoryStorage, RustCrypto};
use keyserver::KeyServer;

pub type Server = KeyServer<RustCrypto, MemoryStorage>;

pub fn new_server() -> Arc<Server> {
    Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()))
}

keyserver::transport_conformance!(in_process, RustCrypto::new(), |s| async move {
    (keyserver::transports::InProcess::new(s), ())
});

/// A server on an ephemeral loopback port, plain HTTP.
#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
pub async fn loopback(server: Arc<dyn keyserver::KeyService>) -> keyserver::transports::HttpServer {
    let config = keyserver::transports::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    keyserver::transports::HttpServer::start(server, config)
        .await
        .unwrap()
}
