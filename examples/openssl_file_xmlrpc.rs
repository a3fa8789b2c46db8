//! OpenSsl cipher suite, FileStorage, XML-RPC transport: the original key server's narrative.
//!
//! `cargo run --example openssl_file_xmlrpc --features cipher-openssl,storage-file,transport-xmlrpc`

mod common;

use keyserver::backends::{FileStorage, OpenSsl};
use keyserver::transports::XmlRpc;

fn main() -> keyserver::Result<()> {
    common::runtime().block_on(async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let storage = FileStorage::open(dir.path().join("keys")).await?;
        common::narrative(OpenSsl::new(), storage, XmlRpc::new).await
    })
}
