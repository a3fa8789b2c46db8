//! Transports: the client side of the wire protocol
//! ([`Transport`](crate::Transport)) and the servers that speak it, each
//! behind its own Cargo feature. None is enabled by this version yet: the
//! XML-RPC, JSON-RPC and in-process transports are being built.
