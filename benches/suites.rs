//! Cipher-suite benchmarks: KEK generation (RSA-3072), wrap, unwrap, and
//! envelope seal/open at 1 KiB, 16 KiB and 1 MiB, and the HKDF and in-place
//! AES-GCM primitives, for each suite.
//!
//! Run: `cargo bench --bench suites --all-features`. Compare with
//! `openssl speed rsa3072` and `openssl speed -evp aes-128-gcm` in the same
//! sitting (see BENCHMARKS.md).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keyserver::backends::{OpenSsl, RustCrypto};
use keyserver::{envelope, CipherSuite, Dek, Kek};

fn bench_suite<C: CipherSuite>(c: &mut Criterion, suite: C) {
    let name = suite.name();
    let kek = Kek::from_pkcs8_der(&suite.generate_rsa(3072).expect("keygen")).expect("kek");
    let dek_bytes = [7u8; 16];
    let wrapped = suite
        .rsa_oaep_wrap(kek.public_key_der(), &dek_bytes)
        .expect("wrap");

    let mut rsa = c.benchmark_group(format!("{name}/rsa3072"));
    rsa.sample_size(10)
        .measurement_time(Duration::from_secs(20));
    rsa.bench_function("generate", |b| {
        b.iter(|| black_box(suite.generate_rsa(3072).expect("keygen")))
    });
    rsa.finish();

    let mut oaep = c.benchmark_group(format!("{name}/oaep-sha256"));
    oaep.bench_function("wrap", |b| {
        b.iter(|| {
            black_box(
                suite
                    .rsa_oaep_wrap(kek.public_key_der(), &dek_bytes)
                    .expect("wrap"),
            )
        })
    });
    oaep.bench_function("unwrap", |b| {
        b.iter(|| {
            black_box(
                suite
                    .rsa_oaep_unwrap(kek.pkcs8_der(), &wrapped)
                    .expect("unwrap"),
            )
        })
    });
    // What the core runs before every unwrap: is the KEK one key pair?
    oaep.bench_function("check-key-pair", |b| {
        b.iter(|| {
            suite
                .rsa_check_key_pair(black_box(kek.pkcs8_der()))
                .expect("a genuine key")
        })
    });
    oaep.finish();

    let dek = Dek::from_bytes(&dek_bytes).expect("dek");
    let id = kek.id();
    let mut env = c.benchmark_group(format!("{name}/envelope-aes128"));
    for size in [1usize << 10, 16 << 10, 1 << 20] {
        let plaintext = vec![0x5au8; size];
        let sealed = envelope::seal(&suite, &id, &dek, b"", &plaintext).expect("seal");
        env.throughput(Throughput::Bytes(size as u64));
        env.bench_with_input(BenchmarkId::new("seal", size), &plaintext, |b, p| {
            b.iter(|| black_box(envelope::seal(&suite, &id, &dek, b"", p).expect("seal")))
        });
        env.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, s| {
            b.iter(|| black_box(envelope::open(&suite, &dek, b"", s).expect("open")))
        });
    }
    env.finish();

    let mut prim = c.benchmark_group(format!("{name}/primitives"));
    let mut okm = [0u8; 16];
    prim.bench_function("hkdf-sha256-16", |b| {
        b.iter(|| {
            suite
                .hkdf_sha256(&dek_bytes, &[1; 32], b"info", &mut okm)
                .expect("hkdf");
            black_box(&okm);
        })
    });
    let mut buf = vec![0x5au8; 16 << 10];
    prim.throughput(Throughput::Bytes(buf.len() as u64));
    prim.bench_function("aes128-gcm-seal-in-place-16k", |b| {
        b.iter(|| {
            black_box(
                suite
                    .aes_gcm_seal_in_place(&dek_bytes, &[0; 12], b"", &mut buf)
                    .expect("seal"),
            )
        })
    });
    prim.finish();
}

fn suites(c: &mut Criterion) {
    bench_suite(c, RustCrypto::new());
    bench_suite(c, OpenSsl::new());
}

criterion_group!(benches, suites);
criterion_main!(benches);
