//! `keyserver bench`: a load generator against a running server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyserver::{Encryption, KeyService};

use super::args::{BenchArgs, BenchOp};
use super::client::client;
use super::exit::Failure;
use super::output::print_stdout;

pub(crate) async fn bench(args: BenchArgs) -> Result<(), Failure> {
    let clients = args.clients.max(1);
    let duration = Duration::from_secs_f64(args.duration.max(0.1));
    let setup = client(&args.client)?;
    let kek = setup.generate().await?;
    let plaintext = vec![0x5au8; args.size];
    let sealed = setup.encrypt(&kek, &plaintext).await?;
    let (kek, plaintext, sealed) = (Arc::new(kek), Arc::new(plaintext), Arc::new(sealed));
    let start = Instant::now() + Duration::from_millis(100);
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = Arc::new(client(&args.client)?);
        // Warm the DEK cache of local operations before the clock starts.
        if matches!(args.op, BenchOp::Encrypt | BenchOp::Decrypt) {
            client.get(&kek).await?;
        }
        let (kek, plaintext, sealed, op) = (
            Arc::clone(&kek),
            Arc::clone(&plaintext),
            Arc::clone(&sealed),
            args.op,
        );
        let requests = args.requests.unwrap_or(u64::MAX);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut done = 0u64;
            // Local operations reuse one output buffer, as a program
            // sealing many messages does (`encrypt_into`): what is measured
            // is the client's work, not the allocator's.
            let mut out = Vec::with_capacity(plaintext.len() + 256);
            // One clock read per operation: its end is the next one's start.
            let mut t = Instant::now();
            while t < deadline && done < requests {
                done += 1;
                let ok = match op {
                    BenchOp::Generate => client.transport().generate(None).await.is_ok(),
                    BenchOp::GetKey => client.transport().get_key(&kek).await.is_ok(),
                    BenchOp::GetWrapped => client.transport().get_wrapped(&kek.id()).await.is_ok(),
                    BenchOp::Status => client.transport().status().await.is_ok(),
                    BenchOp::Encrypt => client
                        .encrypt_into(&kek, &plaintext, b"", &mut out)
                        .await
                        .is_ok(),
                    BenchOp::Decrypt => client
                        .decrypt_into(&kek, &sealed, b"", &mut out)
                        .await
                        .is_ok(),
                };
                let now = Instant::now();
                if ok {
                    latencies.push(now - t);
                } else {
                    errors += 1;
                }
                t = now;
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.map_err(|_| Failure {
            code: 1,
            message: "a benchmark client failed".into(),
        })?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    let secs = (Instant::now().min(deadline) - start)
        .as_secs_f64()
        .max(1e-3);
    let ops = latencies.len() as f64 / secs;
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let mut line = format!(
        "bench {:?} over {:?}, {clients} clients, {secs:.1} s: {} ok, {errors} errors, \
         {ops:.1} ops/s, p50 {:.3} ms, p99 {:.3} ms",
        args.op,
        args.client.transport,
        latencies.len(),
        pct(0.5),
        pct(0.99)
    );
    if matches!(args.op, BenchOp::Encrypt | BenchOp::Decrypt) {
        line.push_str(&format!(", {:.1} MB/s", ops * args.size as f64 / 1e6));
    }
    line.push('\n');
    print_stdout(&line)
}
