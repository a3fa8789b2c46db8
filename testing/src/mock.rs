//! A ready [`mockall`] mock of [`Transport`](keyserver_core::Transport), for tests of
//! code that holds a [`KeyClient`](keyserver_core::KeyClient) without a server.
//!
//! A `Transport` has one method that does anything, `send`: every
//! `KeyClient` call becomes one or more [`Call`]s through it. What each
//! sends (set an expectation for each, or the mock panics on the first it
//! did not expect):
//!
//! | `KeyClient` call | sends |
//! | --- | --- |
//! | `generate`, `generate_with_strength`, `generate_with` | `Generate` |
//! | `get`, `dek`, and `encrypt`/`decrypt` on a DEK not cached | `GetKey` (or `GetWrapped` with client-side unwrap), then `Describe` of the same key, to learn its state (an error there is taken as "state unknown") |
//! | `encrypt`/`decrypt` with the DEK cached and fresh | nothing |
//! | `decrypt` of data sealed under another key | `Describe` of the KEK's key, following `rotated_from` |
//! | `contains`, `get_wrapped`, `status`, `describe`, `rotate`, `change`, `list_keys` | the call of that name |
//!
//! ```
//! # #[cfg(feature = "cipher-rustcrypto")]
//! # keyserver::testing::run(async {
//! use keyserver::api::{Call, Reply};
//! use keyserver::backends::{MemoryStorage, RustCrypto};
//! use keyserver::testing::MockTransport;
//! use keyserver::{Dek, Encryption, Error, KeyClient, KeyServer};
//!
//! let kek = KeyServer::new(RustCrypto::new(), MemoryStorage::new()).generate().await?;
//! let mut transport = MockTransport::new();
//! transport.expect_endpoint().return_const("mock://keys".to_string());
//! transport
//!     .expect_send()
//!     .withf(|call| matches!(call, Call::GetKey(_)))
//!     .times(1)
//!     .returning(|_| Ok(Reply::Dek(Dek::from_bytes(&[7; 16])?)));
//! // The state, asked after every DEK fetched: here the principal may not
//! // describe, so the state stays unknown.
//! transport
//!     .expect_send()
//!     .withf(|call| matches!(call, Call::Describe(_)))
//!     .returning(|_| Err(Error::NotPermitted));
//! let client = KeyClient::new(transport, RustCrypto::new());
//! assert_eq!(client.get(&kek).await?.as_bytes(), &[7; 16]);
//! // Cached: the second get sends nothing.
//! assert_eq!(client.get(&kek).await?.as_bytes(), &[7; 16]);
//! # Ok::<(), keyserver::Error>(())
//! # }).unwrap();
//! ```
#![allow(missing_docs)]

use keyserver_core::api::{Call, Reply};
use keyserver_core::Result;

mockall::mock! {
    /// A [`Transport`](keyserver_core::Transport) whose `send` answers what each
    /// test sets (see the module docs for what `KeyClient` sends).
    pub Transport {}

    #[async_trait::async_trait]
    impl keyserver_core::Transport for Transport {
        fn endpoint(&self) -> String;
        async fn send(&self, call: Call) -> Result<Reply>;
    }
}
