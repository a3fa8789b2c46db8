//! OpenSsl cipher suite, MemoryStorage, XML-RPC transport: the original key server's narrative.
//!
//! `cargo run --example openssl_memory_xmlrpc --features cipher-openssl,storage-memory,transport-xmlrpc`

mod common;

use keyserver::backends::{MemoryStorage, OpenSsl};
use keyserver::transports::XmlRpc;

fn main() -> keyserver::Result<()> {
    common::runtime().block_on(async {
        let storage = MemoryStorage::new();
        common::narrative(OpenSsl::new(), storage, XmlRpc::new).await
    })
}
