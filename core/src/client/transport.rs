//! The [`Transport`] trait: how a client reaches a key server.

use async_trait::async_trait;

use crate::api::{Call, KeyService, Reply, Status};
use crate::{
    Change, Dek, Kek, KekAlg, KeyFilter, KeyId, KeyInfo, KeyPage, Result, Strength, Target,
    WrappedDek,
};

/// The client side of a protocol: sends a [`Call`] to a key server and brings
/// its [`Reply`] back.
///
/// A transport is a codec of the one method table ([`crate::api`]): it knows
/// how its protocol writes calls and replies, and nothing about what each
/// method means. Every transport is also a [`KeyService`] (a blanket
/// implementation turns each typed method into a [`Call`]), so
/// `transport.get_wrapped(&id)` works on any of them, and an HTTP listener can
/// serve a transport to another server as a proxy.
///
/// Implementations: `XmlRpc`, `JsonRpc` and [`InProcess`](crate::transports::InProcess).
///
/// # Errors
///
/// A server's error comes back as the typed [`Error`](crate::Error) variant it
/// was on the server ([`Error::from_wire`](crate::Error::from_wire));
/// connection problems and answers that do not fit the protocol as
/// [`Error::Transport`](crate::Error::Transport).
///
/// # Example
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use keyserver::{KeyServer, KeyService, Transport};
/// use keyserver::api::{Call, Reply};
/// use keyserver::backends::{MemoryStorage, RustCrypto};
/// use keyserver::transports::InProcess;
///
/// let transport = InProcess::new(Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new())));
/// let kek = transport.generate(None).await?;                 // typed, through KeyService
/// let reply = transport.send(Call::Contains(kek.id())).await?; // as a call
/// assert_eq!(reply, Reply::Bool(true));
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Transport: Send + Sync {
    /// Where this transport connects to, for display (a URL).
    fn endpoint(&self) -> String;

    /// Sends one call and waits for its reply.
    async fn send(&self, call: Call) -> Result<Reply>;
}

/// A boxed transport is a transport: pick the protocol at run time and still
/// build a `KeyClient<Box<dyn Transport>>`.
#[async_trait]
impl<T: Transport + ?Sized> Transport for Box<T> {
    fn endpoint(&self) -> String {
        (**self).endpoint()
    }
    async fn send(&self, call: Call) -> Result<Reply> {
        (**self).send(call).await
    }
}

/// Every transport is the service it reaches.
#[async_trait]
impl<T: Transport + ?Sized> KeyService for T {
    async fn generate(&self, strength: Option<Strength>) -> Result<Kek> {
        self.send(Call::Generate(strength, None)).await?.into_kek()
    }
    async fn generate_with_alg(
        &self,
        strength: Option<Strength>,
        alg: Option<KekAlg>,
    ) -> Result<Kek> {
        // The wire names an algorithm after a strength: without one, the
        // server's minimum (what it would choose) is asked first.
        let strength = match (strength, alg) {
            (None, Some(_)) => Some(Strength::from_bits(u32::from(
                self.status().await?.strength,
            ))?),
            (strength, _) => strength,
        };
        self.send(Call::Generate(strength, alg)).await?.into_kek()
    }
    async fn get_key(&self, kek: &Kek) -> Result<Dek> {
        self.send(Call::GetKey(kek.clone())).await?.into_dek()
    }
    async fn get_wrapped(&self, key_id: &KeyId) -> Result<WrappedDek> {
        self.send(Call::GetWrapped(*key_id)).await?.into_wrapped()
    }
    async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        self.send(Call::Contains(*key_id)).await?.into_bool()
    }
    async fn status(&self) -> Result<Status> {
        self.send(Call::Status).await?.into_status()
    }
    async fn describe(&self, key_id: &KeyId) -> Result<KeyInfo> {
        self.send(Call::Describe(*key_id)).await?.into_info()
    }
    async fn rotate(&self, kek: &Kek, strength: Option<Strength>) -> Result<Kek> {
        self.send(Call::Rotate(kek.clone(), strength))
            .await?
            .into_kek()
    }
    async fn change(&self, change: Change, target: &Target) -> Result<KeyInfo> {
        self.send(Call::Change(change, target.clone()))
            .await?
            .into_info()
    }
    async fn list_keys(&self, filter: &KeyFilter) -> Result<KeyPage> {
        self.send(Call::ListKeys(filter.clone())).await?.into_keys()
    }
    async fn call(&self, call: Call) -> Result<Reply> {
        self.send(call).await
    }
}
