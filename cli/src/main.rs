//! The `keyserver` command: run a key server, or use one.
//!
//! ```sh
//! keyserver serve                       # 127.0.0.1:8731, RustCrypto, ./keyserver-data
//! keyserver generate --out kek.pem      # KeyId on stderr
//! keyserver encrypt --kek kek.pem --in data --out data.kss
//! keyserver decrypt --kek kek.pem --in data.kss --out data
//! keyserver status
//! ```
//!
//! Exit codes: 0 success, 1 other failure, 2 usage, 3 cannot reach or talk to
//! the server, 4 key not found, 5 authentication or decryption failure, 6
//! the server is busy.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cli;
mod wipe;

/// Every heap block is wiped when it is freed (see `wipe.rs`): request and
/// response buffers of the HTTP stack, parser scratch space and every other
/// buffer this process frees leave no key behind.
#[global_allocator]
static ALLOCATOR: wipe::WipeOnFree = wipe::WipeOnFree;

fn main() -> std::process::ExitCode {
    cli::main()
}
