//! Keys and the KEK algorithms: the key types ([`key`]), EC keys
//! ([`ec`]) with HPKE (RFC 9180, [`hpke`]), and hybrid post-quantum KEKs
//! ([`hybrid`]).

pub mod ec;
pub mod hpke;
pub mod hybrid;
pub mod key;
