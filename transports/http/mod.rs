//! What the protocol endpoints share below them: reading a request body with
//! a limit, and running parsed calls with a time limit and an access log. The
//! listener (`transports/listener.rs`) sits above the endpoints.

pub(crate) mod audit;
pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod conn;
pub(crate) mod dispatch;
pub(crate) mod gate;
pub(crate) mod metrics;
pub(crate) mod peer;
