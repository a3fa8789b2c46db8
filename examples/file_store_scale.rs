//! FileStorage at scale: how long a store of N records takes to open, how
//! fast keys are looked up in it, and what a record costs on disk.
//!
//! ```sh
//! cargo run --release --example file_store_scale -- [N] [DIR]
//! ```
//!
//! N defaults to 1,000,000 and DIR to a fresh temporary directory (removed at
//! the end). The N synthetic records are bulk-loaded with `Durability::NoSync`
//! (a durable put costs an fsync each, minutes for a million); the store is
//! then reopened with the default fsync durability and measured: open (one
//! scan that counts records and removes crash leftovers), `get` and
//! `contains` latencies at random keys, durable `put`s, and bytes on disk.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyserver::backends::{Durability, FileStorage};
use keyserver::{KeyId, KeyStorage, Strength, WrappedDek};

fn record(i: u64) -> WrappedDek {
    let id = KeyId::from_spki_der(format!("scale {i}").as_bytes());
    // ok: fixed valid sizes.
    WrappedDek::new(id, 3072, Strength::S128, i, vec![(i % 251) as u8; 384]).expect("record")
}

fn disk_bytes(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("metadata");
        bytes += meta.blocks() * 512;
        if meta.is_dir() {
            let (b, f) = disk_bytes(&entry.path());
            bytes += b;
            files += f;
        } else {
            files += 1;
        }
    }
    (bytes, files)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map(Into::into)
        .unwrap_or_else(|| tmp.path().join("store"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    rt.block_on(async {
        let start = Instant::now();
        let store = Arc::new(FileStorage::open_with(&dir, Durability::NoSync).await?);
        let already = store.count();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut i = already + t;
                while i < n {
                    store.put(&record(i)).await?;
                    i += 8;
                }
                Ok::<_, keyserver::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        println!(
            "bulk load (no fsync): {} records in {:.1} s",
            n - already.min(n),
            start.elapsed().as_secs_f64()
        );
        drop(store);

        // Best effort: drop the page cache so the open is measured cold.
        let cold = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
        let start = Instant::now();
        let store = FileStorage::open(&dir).await?;
        println!(
            "open ({} page cache): {:.2} s for {} records",
            if cold { "cold" } else { "warm" },
            start.elapsed().as_secs_f64(),
            store.count()
        );

        let samples = 20_000u64;
        let mut get = Vec::with_capacity(samples as usize);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..samples {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let rec = record(state % n);
            let t = Instant::now();
            let got = store.get(rec.key_id()).await?;
            get.push(t.elapsed());
            assert_eq!(got, rec);
        }
        get.sort();
        let mut miss = Vec::with_capacity(samples as usize);
        for i in 0..samples {
            let id = KeyId::from_spki_der(format!("missing {i}").as_bytes());
            let t = Instant::now();
            let found = store.contains(&id).await?;
            miss.push(t.elapsed());
            assert!(!found);
        }
        miss.sort();
        println!(
            "get (random key, {samples} samples): p50 {:?} p99 {:?}",
            percentile(&get, 0.5),
            percentile(&get, 0.99)
        );
        println!(
            "contains (missing key): p50 {:?} p99 {:?}",
            percentile(&miss, 0.5),
            percentile(&miss, 0.99)
        );

        let durable = 1000u64;
        let start = Instant::now();
        for i in 0..durable {
            store.put(&record(n + i)).await?;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "durable put (fsync file + directory), sequential: {:.0} puts/s ({:.2} ms each)",
            durable as f64 / secs,
            secs * 1000.0 / durable as f64
        );

        let (bytes, files) = disk_bytes(&dir);
        println!(
            "disk: {:.1} MiB for {} files, {:.0} bytes per record (record itself: {} bytes)",
            bytes as f64 / (1 << 20) as f64,
            files,
            bytes as f64 / store.count() as f64,
            record(0).encode().len()
        );
        Ok(())
    })
}
