//! AwsLc cipher suite, MemoryStorage, XML-RPC transport: the original key server's narrative.
//!
//! `cargo run --example awslc_memory_xmlrpc --features cipher-awslc,storage-memory,transport-xmlrpc`

mod common;

use keyserver::backends::{AwsLc, MemoryStorage};
use keyserver::transports::XmlRpc;

fn main() -> keyserver::Result<()> {
    common::runtime().block_on(async {
        let storage = MemoryStorage::new();
        common::narrative(AwsLc::new(), storage, XmlRpc::new).await
    })
}
