//! OpenSsl cipher suite, MemoryStorage, JSON-RPC transport: the original key server's narrative.
//!
//! `cargo run --example openssl_memory_jsonrpc --features cipher-openssl,storage-memory,transport-jsonrpc`

mod common;

use keyserver::backends::{MemoryStorage, OpenSsl};
use keyserver::transports::JsonRpc;

fn main() -> keyserver::Result<()> {
    common::runtime().block_on(async {
        let storage = MemoryStorage::new();
        common::narrative(OpenSsl::new(), storage, JsonRpc::new).await
    })
}
