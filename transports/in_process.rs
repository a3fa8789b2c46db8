//! `InProcess`: a transport that calls a `KeyServer` in the same process.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    CipherSuite, Dek, Kek, KeyClient, KeyId, KeyServer, KeyStorage, Result, Status, Strength,
    Transport, WrappedDek,
};

/// A [`Transport`] that calls a [`KeyServer`] directly, with no network: for
/// tests, and for embedding the server and its clients in one process.
///
/// It behaves like the network transports, errors included, so a test written
/// against it holds for them.
///
/// # Example
///
/// ```
/// # #[cfg(all(feature = "cipher-rustcrypto", feature = "storage-memory"))]
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use keyserver::{KeyServer, Transport};
/// use keyserver::backends::{MemoryStorage, RustCrypto};
/// use keyserver::transports::InProcess;
///
/// let server = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
/// let transport = InProcess::new(Arc::clone(&server));
/// let kek = transport.generate(None).await?;
/// assert!(transport.contains(&kek.id()).await?);
/// assert_eq!(transport.status().await?.keys, 1);
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
pub struct InProcess<C, S> {
    server: Arc<KeyServer<C, S>>,
}

impl<C: CipherSuite, S: KeyStorage> InProcess<C, S> {
    /// A transport to `server`.
    pub fn new(server: Arc<KeyServer<C, S>>) -> Self {
        InProcess { server }
    }

    /// The seed's `testing.setUpRPC`: a [`KeyClient`] wired to `server` in
    /// process, encrypting locally with a copy of the server's cipher suite.
    pub fn client(server: Arc<KeyServer<C, S>>) -> KeyClient<Self>
    where
        C: Clone,
    {
        let suite = server.suite().clone();
        KeyClient::new(InProcess::new(server), suite)
    }

    /// The server this transport calls.
    pub fn server(&self) -> &Arc<KeyServer<C, S>> {
        &self.server
    }
}

#[async_trait]
impl<C: CipherSuite, S: KeyStorage> Transport for InProcess<C, S> {
    fn endpoint(&self) -> String {
        "inprocess://keyserver".to_string()
    }

    async fn generate(&self, strength: Option<Strength>) -> Result<Kek> {
        match strength {
            Some(s) => self.server.generate_with_strength(s).await,
            None => self.server.generate().await,
        }
    }

    async fn get_key(&self, kek: &Kek) -> Result<Dek> {
        self.server.get(kek).await
    }

    async fn get_wrapped(&self, key_id: &KeyId) -> Result<WrappedDek> {
        self.server.get_wrapped(key_id).await
    }

    async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        self.server.contains(key_id).await
    }

    async fn status(&self) -> Result<Status> {
        Ok(self.server.status())
    }
}
