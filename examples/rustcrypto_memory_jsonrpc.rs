//! RustCrypto cipher suite, MemoryStorage, JSON-RPC transport: the original key server's narrative.
//!
//! `cargo run --example rustcrypto_memory_jsonrpc --features cipher-rustcrypto,storage-memory,transport-jsonrpc`

mod common;

use keyserver::backends::{MemoryStorage, RustCrypto};
use keyserver::transports::JsonRpc;

fn main() -> keyserver::Result<()> {
    common::runtime().block_on(async {
        let storage = MemoryStorage::new();
        common::narrative(RustCrypto::new(), storage, JsonRpc::new).await
    })
}
