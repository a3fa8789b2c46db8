//! The key server: [`KeyServer`](key_server::KeyServer) ([`key_server`]),
//! its key lifecycle ([`lifecycle`]) and the sweeps that keep it
//! ([`keeper`]), the bounded pools its CPU work runs on ([`pool`],
//! [`work`]), and the record cache in front of a storage ([`cache`]).

pub mod cache;
pub mod keeper;
pub mod key_server;
pub mod lifecycle;
pub mod pool;
pub mod witness;
pub mod work;

pub use key_server::*;
