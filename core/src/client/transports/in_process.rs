//! `InProcess`: a transport that calls a service in the same process.

use std::sync::Arc;

use async_trait::async_trait;

use crate::api::{Call, KeyService, Reply};
use crate::{CipherSuite, KeyClient, KeyServer, KeyStorage, Result, Transport};

/// A [`Transport`] that calls a [`KeyService`] (a [`KeyServer`], usually)
/// directly, with no network: for tests, and for embedding the server and
/// its clients in one process.
///
/// Its codec is the identity: calls and replies cross as values, and errors
/// as the typed variants the network transports also give back, so a test
/// written against it holds for them.
///
/// # Example
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use keyserver::{KeyServer, KeyService};
/// use keyserver::backends::{MemoryStorage, RustCrypto};
/// use keyserver::transports::InProcess;
///
/// let server = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
/// let transport = InProcess::new(server);
/// let kek = transport.generate(None).await?;
/// assert!(transport.contains(&kek.id()).await?);
/// assert_eq!(transport.status().await?.keys, 1);
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct InProcess {
    service: Arc<dyn KeyService>,
}

impl InProcess {
    /// A transport to `service`.
    pub fn new(service: Arc<dyn KeyService>) -> Self {
        InProcess { service }
    }

    /// The seed's `testing.setUpRPC`: a [`KeyClient`] wired to `server` in
    /// process, encrypting locally with a copy of the server's cipher suite.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use keyserver::{Encryption, KeyServer};
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    /// use keyserver::transports::InProcess;
    ///
    /// let client = InProcess::client(Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new())));
    /// let kek = client.generate().await?;
    /// let sealed = client.encrypt(&kek, b"data").await?;
    /// assert_eq!(&client.decrypt(&kek, &sealed).await?[..], b"data");
    /// # Ok::<(), keyserver::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn client<C, S>(server: Arc<KeyServer<C, S>>) -> KeyClient<Self>
    where
        C: CipherSuite + Clone,
        S: KeyStorage,
    {
        let suite = server.suite().clone();
        KeyClient::new(InProcess::new(server), suite)
    }

    /// The service this transport calls.
    pub fn service(&self) -> &Arc<dyn KeyService> {
        &self.service
    }
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcess")
    }
}

#[async_trait]
impl Transport for InProcess {
    fn endpoint(&self) -> String {
        "inprocess://keyserver".to_string()
    }

    async fn send(&self, call: Call) -> Result<Reply> {
        self.service.call(call).await
    }
}
