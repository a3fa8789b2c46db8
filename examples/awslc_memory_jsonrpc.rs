//! AwsLc cipher suite, MemoryStorage, JSON-RPC transport: the original key server's narrative.
//!
//! `cargo run --example awslc_memory_jsonrpc --features cipher-awslc,storage-memory,transport-jsonrpc`

mod common;

use keyserver::backends::{AwsLc, MemoryStorage};
use keyserver::transports::JsonRpc;

fn main() -> keyserver::Result<()> {
    common::runtime().block_on(async {
        let storage = MemoryStorage::new();
        common::narrative(AwsLc::new(), storage, JsonRpc::new).await
    })
}
