//! The `keyserver` command.
//!
//! This version has no network transport yet, so it cannot serve; it reports
//! what it was built with. `serve` and the client commands arrive with the
//! transports.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("version") | Some("--version") | Some("-V") => {
            println!("keyserver {}", keyserver::VERSION);
            println!("cipher suites: {}", suites().join(", "));
            println!("storage backends: {}", storages().join(", "));
            ExitCode::SUCCESS
        }
        Some("help") | Some("--help") | Some("-h") => {
            println!("usage: keyserver [version]");
            println!("This build has no transport: `serve` and the client commands are not available yet.");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("keyserver: unknown command '{other}' (this build knows: version, help)");
            ExitCode::from(2)
        }
    }
}

fn suites() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "cipher-rustcrypto") {
        v.push("rustcrypto");
    }
    v
}

fn storages() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "storage-memory") {
        v.push("memory");
    }
    v
}
