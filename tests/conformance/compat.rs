//! What an earlier build wrote stays readable: a file store, KEKs of every
//! algorithm, envelope messages (with and without a context) and streams,
//! all written by the code of commit d98c444, when envelope v1 was
//! `KeyClient`'s default (`testing/fixtures/compat/`, see its README). The
//! client of this build writes v2 by default and opens all of them.

use std::sync::Arc;

use keyserver::backends::{FileStorage, RustCrypto};
use keyserver::transports::InProcess;
use keyserver::{envelope, Encryption, Kek, KeyServer, KeyStorage};

use crate::common::root;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("testing/fixtures/compat").join(name)).unwrap()
}

/// Copies a store with the modes the file store insists on (git keeps
/// none): 0700 directories, 0600 files.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

#[tokio::test]
async fn data_an_earlier_build_wrote_opens_with_this_one() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &root().join("testing/fixtures/compat/store"),
        &dir.path().join("store"),
    );
    let storage = FileStorage::open(dir.path().join("store")).await.unwrap();
    assert_eq!(storage.count(), 3);
    let server = Arc::new(KeyServer::new(RustCrypto::new(), storage));
    let client = InProcess::client(Arc::clone(&server));
    assert_eq!(client.envelope_version(), envelope::Version::V2);
    let pattern: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    for alg in ["rsa", "ec", "hybrid"] {
        let kek =
            Kek::from_pem(&String::from_utf8(fixture(&format!("{alg}.kek.pem"))).unwrap()).unwrap();
        let message = fixture(&format!("{alg}.message"));
        assert_eq!(message[3], envelope::VERSION, "{alg}: written as v1");
        assert_eq!(
            &client.decrypt(&kek, &message).await.unwrap()[..],
            b"Stephan Richter",
            "{alg}"
        );
        assert_eq!(
            &server.decrypt(&kek, &message).await.unwrap()[..],
            b"Stephan Richter"
        );
        let with_context = fixture(&format!("{alg}.message-context"));
        assert_eq!(
            &client
                .decrypt_with_context(&kek, &with_context, b"row 42")
                .await
                .unwrap()[..],
            b"Stephan Richter"
        );
        assert!(client.decrypt(&kek, &with_context).await.is_err());
        let mut opened = Vec::new();
        client
            .decrypt_stream(&kek, &fixture(&format!("{alg}.stream"))[..], &mut opened)
            .await
            .unwrap();
        assert_eq!(opened, pattern, "{alg}: stream");
        // What this build writes now is v2, and opens too.
        let sealed = client.encrypt(&kek, b"Stephan Richter").await.unwrap();
        assert_eq!(sealed[3], envelope::VERSION_2);
        assert_eq!(
            &server.decrypt(&kek, &sealed).await.unwrap()[..],
            b"Stephan Richter"
        );
    }
}
