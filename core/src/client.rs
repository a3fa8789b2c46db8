//! The client side: [`KeyClient`](key_client::KeyClient) with its DEK
//! cache ([`key_client`]), the [`Transport`](transport::Transport) trait it
//! is generic over ([`transport`]), and the generic transports
//! ([`transports`]).

pub mod key_client;
pub mod transport;
pub mod transports;

pub use key_client::*;
