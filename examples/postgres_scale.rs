//! PostgresStorage at scale: N keys bulk-loaded into a database, then what
//! a server does with them, measured: uncached and cached reads at random
//! keys, storing a new key within a quota (`generate`'s storage step), a
//! page of `list_keys` and one filtered by owner, the sweep with due keys
//! among them, and bytes per key in the tables and their indexes.
//!
//! ```sh
//! cargo run --release --example postgres_scale \
//!   --features storage-postgres,cipher-rustcrypto -- URL [N]
//! ```
//!
//! N defaults to 1,000,000. The bulk load is `COPY ... FROM STDIN BINARY`
//! of synthetic records (RSA-3072 size, valid format and checksum, whose
//! KEKs nobody holds: no key is generated for them) in batches of 100,000
//! rows, with metadata (an owner among 100) for one key in ten and a
//! destruction already due for one in ten thousand. A database that already
//! holds N records is measured as it is. benches/postgres_scale.sh runs it
//! with the peer baselines (pgbench -S on a table of the same size, a bare
//! INSERT) in one sitting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyserver::backends::{PostgresStorage, RustCrypto};
use keyserver::plugin::RecordCache;
use keyserver::{KeyFilter, KeyId, KeyMeta, KeyServer, KeyState, KeyStorage, Strength, WrappedDek};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

fn id(i: u64) -> KeyId {
    KeyId::from_spki_der(format!("pg scale {i}").as_bytes())
}

fn record(i: u64) -> WrappedDek {
    // ok: fixed valid sizes.
    WrappedDek::new(id(i), 3072, Strength::S128, i, vec![(i % 251) as u8; 384]).expect("record")
}

/// Metadata for one key in ten (an owner among 100); one in ten thousand
/// destroy-pending, due since time 1,000.
fn meta(i: u64) -> Option<KeyMeta> {
    if !i.is_multiple_of(10) {
        return None;
    }
    let mut meta = KeyMeta::new(id(i), Strength::S128, i, Some(format!("o{}", i / 10 % 100)));
    if i.is_multiple_of(10_000) {
        meta.state = KeyState::DestroyPending;
        meta.previous = Some(KeyState::Active);
        meta.destroy_at = Some(1_000);
    }
    Some(meta)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A random index below `n` (xorshift).
fn next(state: &mut u64, n: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % n
}

async fn bulk_load(url: &str, from: u64, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let start = Instant::now();
    let mut i = from;
    while i < n {
        let end = (i + 100_000).min(n);
        let sink = client
            .copy_in("COPY keyserver_records (key_id, record) FROM STDIN BINARY")
            .await?;
        let writer = BinaryCopyInWriter::new(sink, &[Type::BYTEA, Type::BYTEA]);
        futures_util::pin_mut!(writer);
        for k in i..end {
            let rec = record(k);
            writer
                .as_mut()
                .write(&[&rec.key_id().as_bytes().to_vec(), &rec.encode()])
                .await?;
        }
        writer.finish().await?;
        let sink = client
            .copy_in("COPY keyserver_meta (key_id, meta) FROM STDIN BINARY")
            .await?;
        let writer = BinaryCopyInWriter::new(sink, &[Type::BYTEA, Type::BYTEA]);
        futures_util::pin_mut!(writer);
        for k in i..end {
            if let Some(m) = meta(k) {
                writer
                    .as_mut()
                    .write(&[&m.key_id.as_bytes().to_vec(), &m.encode()])
                    .await?;
            }
        }
        writer.finish().await?;
        i = end;
        if i.is_multiple_of(1_000_000) || i == n {
            eprintln!(
                "  loaded {i} keys ({:.0} keys/s)",
                (i - from) as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "bulk load: {} keys (records, and metadata for one in ten) in {:.1} s: {:.0} keys/s",
        n - from,
        start.elapsed().as_secs_f64(),
        (n - from) as f64 / start.elapsed().as_secs_f64()
    );
    client.batch_execute("VACUUM ANALYZE").await?;
    Ok(())
}

async fn sizes(url: &str, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    for table in ["keyserver_records", "keyserver_meta"] {
        let row = client
            .query_one(
                "SELECT pg_table_size($1::text::regclass), pg_indexes_size($1::text::regclass)",
                &[&table],
            )
            .await?;
        let (t, i): (i64, i64) = (row.get(0), row.get(1));
        println!(
            "{table}: {:.0} MB table ({:.0} bytes/key), {:.0} MB indexes ({:.0} bytes/key)",
            t as f64 / 1e6,
            t as f64 / n as f64,
            i as f64 / 1e6,
            i as f64 / n as f64
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: postgres_scale URL [N [--reads-only]]")?;
    let n: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    // Only the uncached reads (get, get_with_meta), three rounds each.
    let reads_only = args.next().as_deref() == Some("--reads-only");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = Arc::new(PostgresStorage::connect(&url).await?);
        let already = store.count();
        if already < n {
            bulk_load(&url, already, n).await?;
        }
        let store = Arc::new(PostgresStorage::connect(&url).await?);
        println!("{} records", store.count());
        sizes(&url, n).await?;

        // Uncached reads at random keys: one at a time (latency), then
        // eight at once (throughput).
        let samples = 20_000;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut lat = Vec::with_capacity(samples);
        for _ in 0..samples {
            let k = next(&mut state, n);
            let t = Instant::now();
            let got = store.get(&id(k)).await?;
            lat.push(t.elapsed());
            assert_eq!(got, record(k));
        }
        lat.sort();
        println!(
            "get (uncached, random of {n}), one at a time: p50 {:.0} us, p99 {:.0} us",
            micros(percentile(&lat, 0.5)),
            micros(percentile(&lat, 0.99))
        );
        // `with_meta`: get_with_meta, what get_wrapped and get_key read
        // (the record and the key's state, one query).
        let rate = |store: Arc<dyn KeyStorage>, hot: u64, with_meta: bool| async move {
            let span = Duration::from_secs(5);
            let start = Instant::now();
            let mut tasks = Vec::new();
            for t in 0..8u64 {
                let store = Arc::clone(&store);
                tasks.push(tokio::spawn(async move {
                    let mut state = 0x2545_f491_4f6c_dd1du64 ^ (t + 1);
                    let mut done = 0u64;
                    while start.elapsed() < span {
                        let key = id(next(&mut state, hot));
                        if with_meta {
                            let (record, _) = store.get_with_meta(&key).await?;
                            assert!(record.is_some(), "every key has a record");
                        } else {
                            store.get(&key).await?;
                        }
                        done += 1;
                    }
                    Ok::<_, keyserver::Error>(done)
                }));
            }
            let mut done = 0;
            for t in tasks {
                done += t.await.expect("task")?;
            }
            Ok::<_, keyserver::Error>(done as f64 / start.elapsed().as_secs_f64())
        };
        let rounds = if reads_only { 3 } else { 1 };
        for round in 1..=rounds {
            println!(
                "get (uncached, random of {n}), 8 at once: {:.0}/s (round {round})",
                rate(Arc::clone(&store) as Arc<dyn KeyStorage>, n, false).await?
            );
            println!(
                "get_with_meta (uncached, random of {n}; one query), 8 at once: {:.0}/s (round {round})",
                rate(Arc::clone(&store) as Arc<dyn KeyStorage>, n, true).await?
            );
        }
        if reads_only {
            return Ok(());
        }
        // Cached: a record cache of 100,000 in front, 50,000 hot keys.
        let cache = Arc::new(RecordCache::new(Arc::clone(&store), 100_000));
        let follower = Arc::clone(&cache);
        let watch = store.watch(move |feed| feed.apply_to(&follower));
        tokio::time::sleep(Duration::from_millis(500)).await;
        for k in 0..50_000 {
            cache.get(&id(k)).await?;
        }
        println!(
            "get (cached, 50,000 hot keys), 8 at once: {:.0}/s",
            rate(Arc::clone(&cache) as Arc<dyn KeyStorage>, 50_000, false).await?
        );
        watch.abort();

        // generate's storage step: a new key and its metadata within a
        // quota (the owner's row locked), one at a time.
        let mut lat = Vec::new();
        for k in 0..2_000u64 {
            let rec = record(n + 1_000_000 + k);
            let meta = KeyMeta::new(*rec.key_id(), Strength::S128, 1, Some("new".into()));
            let t = Instant::now();
            store.put_new(&rec, Some(&meta), Some(1_000_000)).await?;
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "put_new (record + metadata within a quota), one at a time: p50 {:.0} us, p99 {:.0} us",
            micros(percentile(&lat, 0.5)),
            micros(percentile(&lat, 0.99))
        );

        // list_keys and the sweep, through a key server.
        let keys = KeyServer::new(RustCrypto::new(), Arc::clone(&store));
        let t = Instant::now();
        let page = keys
            .list_keys(&KeyFilter {
                limit: Some(1000),
                ..KeyFilter::default()
            })
            .await?;
        println!(
            "list_keys, first page of {}: {:.0} ms",
            page.keys.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        let page = keys
            .list_keys(&KeyFilter {
                limit: Some(1000),
                cursor: page.cursor,
                ..KeyFilter::default()
            })
            .await?;
        println!(
            "list_keys, next page of {}: {:.0} ms",
            page.keys.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        let page = keys
            .list_keys(&KeyFilter {
                limit: Some(100),
                owner: Some("o7".into()),
                ..KeyFilter::default()
            })
            .await?;
        println!(
            "list_keys, first page of {} of one owner (1% of the metadata): {:.0} ms",
            page.keys.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        let destroyed = keys.destroy_due().await?;
        println!(
            "sweep: {destroyed} due keys destroyed among {n} in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let again = keys.destroy_due().await?;
        println!(
            "sweep with nothing due: {again} in {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    })
}
