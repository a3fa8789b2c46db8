//! The [`Transport`] trait: how a client reaches a key server.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Dek, Kek, KeyId, Result, Strength, WrappedDek};

/// What a key server says about itself (the `status` call).
///
/// ```
/// let s = keyserver::Status {
///     keys: 3,
///     version: "0.1.0".into(),
///     suite: "rustcrypto".into(),
///     storage: "memory".into(),
///     strength: 128,
/// };
/// assert_eq!(s.keys, 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Number of stored keys.
    pub keys: u64,
    /// keyserver version of the server.
    pub version: String,
    /// Name of the server's cipher suite.
    pub suite: String,
    /// Name of the server's storage backend.
    pub storage: String,
    /// The server's configured security strength in bits.
    pub strength: u16,
}

/// The client side of the wire protocol: the calls a `KeyClient` makes.
///
/// Each transport (XML-RPC, JSON-RPC, in-process) implements this trait and
/// turns every failure into a typed [`Error`](crate::Error).
///
/// # Errors
///
/// Server errors come back as the matching [`Error`](crate::Error) variant
/// where the code is known, [`Error::Remote`](crate::Error::Remote) otherwise;
/// connection problems as [`Error::Transport`](crate::Error::Transport).
#[async_trait]
pub trait Transport: Send + Sync {
    /// Where this transport connects to, for display (a URL).
    fn endpoint(&self) -> String;

    /// Asks the server to generate a KEK and store its wrapped DEK; `None`
    /// uses the server's configured strength.
    async fn generate(&self, strength: Option<Strength>) -> Result<Kek>;

    /// Server-side unwrap: sends the KEK, receives the DEK.
    async fn get_key(&self, kek: &Kek) -> Result<Dek>;

    /// Client-side unwrap: fetches the wrapped record; the KEK never leaves
    /// the client.
    async fn get_wrapped(&self, key_id: &KeyId) -> Result<WrappedDek>;

    /// Whether the server stores a key under `key_id`.
    async fn contains(&self, key_id: &KeyId) -> Result<bool>;

    /// The server's status.
    async fn status(&self) -> Result<Status>;
}

/// A boxed transport is a transport: pick the protocol at run time and still
/// build a `KeyClient<Box<dyn Transport>>`.
#[async_trait]
impl<T: Transport + ?Sized> Transport for Box<T> {
    fn endpoint(&self) -> String {
        (**self).endpoint()
    }
    async fn generate(&self, strength: Option<Strength>) -> Result<Kek> {
        (**self).generate(strength).await
    }
    async fn get_key(&self, kek: &Kek) -> Result<Dek> {
        (**self).get_key(kek).await
    }
    async fn get_wrapped(&self, key_id: &KeyId) -> Result<WrappedDek> {
        (**self).get_wrapped(key_id).await
    }
    async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        (**self).contains(key_id).await
    }
    async fn status(&self) -> Result<Status> {
        (**self).status().await
    }
}
