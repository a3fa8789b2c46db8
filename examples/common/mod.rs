//! The original key server's narrative, shared by the one-file examples: a `KeyServer` with
//! the chosen cipher suite and storage, served over HTTP on an ephemeral
//! loopback port, used through a `KeyClient` over the chosen protocol.

use std::sync::Arc;

use keyserver::transports::{HttpServer, ServerConfig};
use keyserver::{CipherSuite, Encryption, KeyClient, KeyServer, KeyStorage, Transport};

/// Runs the narrative; panics (exit code 101) if any step fails.
pub async fn narrative<C, S, T>(
    suite: C,
    storage: S,
    connect: impl FnOnce(&str) -> keyserver::Result<T>,
) -> keyserver::Result<()>
where
    C: CipherSuite + Clone,
    S: KeyStorage,
    T: Transport,
{
    // Which combination this example is: every example prints it first.
    let transport = std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or("?");
    println!(
        "combination: the {} suite, {} storage, the {transport} transport",
        suite.name(),
        storage.name()
    );
    // The key server, on its own "machine" (here: a loopback port).
    let keys = Arc::new(KeyServer::new(suite.clone(), storage));
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        ..ServerConfig::default()
    };
    let http = HttpServer::start(keys.clone(), config).await?;
    println!("server: {keys} at {}", http.url());

    // The application host: a client that encrypts locally.
    let client = KeyClient::new(connect(&http.url())?, suite);
    println!("client: {client}");
    let kek = client.generate().await?;
    assert!(keys.contains(&kek.id()).await?);
    println!("generated KEK {}; server now {keys}", kek.id());

    let sealed = client.encrypt(&kek, b"Stephan Richter").await?;
    assert!(client.is_cached(&kek.id()), "the DEK is cached");
    let opened = client.decrypt(&kek, &sealed).await?;
    assert_eq!(&opened[..], b"Stephan Richter");
    // The server opens what the client sealed, and back.
    assert_eq!(&keys.decrypt(&kek, &sealed).await?[..], b"Stephan Richter");
    let by_server = keys.encrypt(&kek, b"from the server").await?;
    assert_eq!(
        &client.decrypt(&kek, &by_server).await?[..],
        b"from the server"
    );
    println!(
        "encrypted {} bytes into {}, decrypted on both sides",
        opened.len(),
        sealed.len()
    );

    http.shutdown().await;
    Ok(())
}

/// A Tokio runtime for `main`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
