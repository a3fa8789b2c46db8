//! The HTTP(S) listener and what its protocol endpoints share.

pub(crate) mod body;
pub(crate) mod dispatch;
mod listener;

pub use listener::{
    HttpServer, ServerConfig, DEFAULT_LISTEN, DEFAULT_MAX_BODY, DEFAULT_REQUEST_TIMEOUT,
};
