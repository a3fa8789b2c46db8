//! The generic transports: [`InProcess`], a [`Transport`](crate::Transport)
//! over any [`KeyService`](crate::KeyService) in the same process, and
//! [`Failover`], one over several others. The network protocols are crates
//! of their own, reached as `keyserver::transports`.

mod failover;
mod in_process;

pub use failover::{Failover, DEFAULT_QUARANTINE};
pub use in_process::InProcess;
