//! RustCrypto cipher suite, MemoryStorage, XML-RPC transport: the original key server's narrative.
//!
//! `cargo run --example rustcrypto_memory_xmlrpc --features cipher-rustcrypto,storage-memory,transport-xmlrpc`

mod common;

use keyserver::backends::{MemoryStorage, RustCrypto};
use keyserver::transports::XmlRpc;

fn main() -> keyserver::Result<()> {
    common::runtime().block_on(async {
        let storage = MemoryStorage::new();
        common::narrative(RustCrypto::new(), storage, XmlRpc::new).await
    })
}
