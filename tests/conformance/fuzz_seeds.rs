//! Every seed input of the fuzz targets (`fuzz/seeds/TARGET/*`), through
//! the same bodies `cargo fuzz` runs (`keyserver::testing::fuzz`): a seed
//! that once found a bug, or a known-answer vector, stays a test on every
//! `cargo test`, with or without cargo-fuzz on the machine.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        body(&data);
        // A few cuts and flips of each seed too, in the spirit of the
        // fuzzer's first mutations.
        for cut in [0, 1, data.len() / 2, data.len().saturating_sub(1)] {
            body(&data[..cut.min(data.len())]);
        }
        for at in [
            0,
            data.len() / 3,
            data.len() / 2,
            data.len().saturating_sub(1),
        ] {
            if let Some(byte) = data.get(at) {
                let mut flipped = data.clone();
                flipped[at] = byte ^ 0x41;
                body(&flipped);
            }
        }
        seeds += 1;
    }
    assert!(seeds > 0, "no seeds in {}", dir.display());
}

#[test]
fn record() {
    replay("record", keyserver::testing::fuzz::record);
}

#[cfg(feature = "cipher-rustcrypto")]
#[test]
fn envelope() {
    replay("envelope", keyserver::testing::fuzz::envelope);
}

#[cfg(feature = "cipher-rustcrypto")]
#[test]
fn stream() {
    replay("stream", keyserver::testing::fuzz::stream);
}

#[cfg(feature = "cipher-rustcrypto")]
#[test]
fn kek() {
    replay("kek", keyserver::testing::fuzz::kek);
}

#[cfg(feature = "transport-xmlrpc-server")]
#[test]
fn xmlrpc_request() {
    replay("xmlrpc_request", keyserver::testing::fuzz::xmlrpc_request);
}

#[cfg(feature = "transport-jsonrpc-server")]
#[test]
fn jsonrpc_request() {
    replay("jsonrpc_request", keyserver::testing::fuzz::jsonrpc_request);
}
