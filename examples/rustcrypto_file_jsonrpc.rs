//! RustCrypto cipher suite, FileStorage, JSON-RPC transport: the original key server's narrative.
//!
//! `cargo run --example rustcrypto_file_jsonrpc --features cipher-rustcrypto,storage-file,transport-jsonrpc`

mod common;

use keyserver::backends::{FileStorage, RustCrypto};
use keyserver::transports::JsonRpc;

fn main() -> keyserver::Result<()> {
    common::runtime().block_on(async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let storage = FileStorage::open(dir.path().join("keys")).await?;
        common::narrative(RustCrypto::new(), storage, JsonRpc::new).await
    })
}
