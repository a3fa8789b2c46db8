//! The byte formats, each written and read only here: the ciphertext
//! envelope ([`envelope`]), streams ([`stream`]), the stored record
//! ([`record`]), copies and backups ([`transfer`]), and the parts they share
//! ([`common`]). Specified in docs/FORMAT.md.

pub mod common;
pub mod envelope;
pub mod record;
pub mod stream;
pub mod transfer;

pub(crate) use common::*;
