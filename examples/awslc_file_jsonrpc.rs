//! AwsLc cipher suite, FileStorage, JSON-RPC transport: the original key server's narrative.
//!
//! `cargo run --example awslc_file_jsonrpc --features cipher-awslc,storage-file,transport-jsonrpc`

mod common;

use keyserver::backends::{AwsLc, FileStorage};
use keyserver::transports::JsonRpc;

fn main() -> keyserver::Result<()> {
    common::runtime().block_on(async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let storage = FileStorage::open(dir.path().join("keys")).await?;
        common::narrative(AwsLc::new(), storage, JsonRpc::new).await
    })
}
