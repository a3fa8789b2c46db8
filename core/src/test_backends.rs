//! The backends the unit tests run on, compiled from their crates' sources
//! into this crate's test build: a dev-dependency on those crates would link
//! a second copy of this crate, whose traits are not this build's. (The
//! doc tests and the other crates' tests use the crates themselves.)

#[path = "../../backends/memory/src/lib.rs"]
mod memory;
// Its catch-all arms for curves and hashes added later are unreachable in
// the crate that defines those enums.
#[allow(unreachable_patterns)]
#[path = "../../backends/rustcrypto/src/lib.rs"]
mod rustcrypto;

pub use memory::MemoryStorage;
pub use rustcrypto::RustCrypto;
