//! What the protocol endpoints share below them: reading a request body with
//! a limit, turning a request's credentials into a caller (through the
//! served service's `authenticate`), and running parsed calls with a time
//! limit and an access log. The listener (`transports/listener.rs`) sits
//! above the endpoints. Nothing here knows the policy: authorization, audit
//! and metrics are layers of the service served (`keyserver::policy`).

pub(crate) mod body;
pub(crate) mod conn;
pub(crate) mod dispatch;
pub(crate) mod gate;
pub(crate) mod peer;
