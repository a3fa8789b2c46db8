//! The data path against the fastest AES-GCM on the machine (issue 18).
//!
//! - `limit`: aws-lc-rs's raw AES-128-GCM seal and open with a key set up
//!   once and a counter nonce: no key derivation, no randomness, no header.
//!   Nothing that produces a keyserver envelope can beat it.
//! - `envelope/SUITE`: [`envelope::seal_into`] and [`envelope::open_into`]
//!   through reused buffers, each message with its own salt, nonce and
//!   HKDF-derived key (the format's per-message work).
//! - `client/SUITE`: the same through [`KeyClient::encrypt_into`] and
//!   [`KeyClient::decrypt_into`] with the DEK cached (an in-process server,
//!   so no request is made): what an application calls.
//! - `client-v2/SUITE`: the same client writing envelope v2 (a session per
//!   cached DEK: no randomness, key derivation or key set-up per message).
//! - `rsa3072-fresh-key`: the `get_key` limit of a server that keeps no KEK,
//!   one core: parse the PKCS#8 KEK, then one RSA-OAEP-SHA256 decryption,
//!   with aws-lc-rs alone, and with each suite: checking the key pair
//!   first (a KEK the server sees for the first time), and not (one it
//!   checked before).
//! - `p256-fresh-key`: the same limit for a P-256 KEK: aws-lc-rs parses
//!   the PKCS#8 KEK and does one ECDH with the record's ephemeral point
//!   (the rest of an HPKE unwrap, HKDF and the open of 16 bytes, is below
//!   a microsecond); and the AWS-LC suite's `ecdh` on the same inputs.
//!
//! Run: `cargo bench --bench data_path --features full -- --noplot` (or
//! `bash benches/data_path.sh`, which adds the streaming, `get_key` and
//! `get_wrapped` servers and the Tink and AWS Encryption SDK peers).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use aws_lc_rs::agreement::{self, UnparsedPublicKey, ECDH_P256};
use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keyserver::backends::{AwsLc, MemoryStorage, OpenSsl, RustCrypto};
use keyserver::crypto::{Aead, EcKek, Kdf, RsaKek, SecureRandom};
use keyserver::transports::InProcess;
use keyserver::Curve;
use keyserver::{envelope, CipherSuite, Dek, Encryption, Kek, KeyServer};

const SIZES: [usize; 3] = [1 << 10, 16 << 10, 1 << 20];

fn limit(c: &mut Criterion) {
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7; 16]).expect("key"));
    let mut group = c.benchmark_group("limit/aws-lc-rs-aes128gcm");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0x5au8; size];
        let mut counter = 0u64;
        group.bench_function(BenchmarkId::new("seal", size), |b| {
            b.iter(|| {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_be_bytes());
                black_box(
                    key.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        &mut buf,
                    )
                    .expect("seal"),
                )
            })
        });
        let mut sealed = vec![0x5au8; size];
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([1; 12]),
                Aad::empty(),
                &mut sealed,
            )
            .expect("seal");
        let mut work = sealed.clone();
        group.bench_function(BenchmarkId::new("open", size), |b| {
            b.iter(|| {
                work.copy_from_slice(&sealed);
                key.open_in_place_separate_tag(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::empty(),
                    tag.as_ref(),
                    &mut work,
                )
                .expect("open");
                black_box(&work);
            })
        });
    }
    group.finish();
}

fn suites() -> Vec<Box<dyn CipherSuite>> {
    vec![
        Box::new(AwsLc::new()),
        Box::new(RustCrypto::new()),
        Box::new(OpenSsl::new()),
    ]
}

/// The per-message costs of an envelope, one by one, per suite: the
/// randomness (salt and nonce), the HKDF-SHA256 key derivation, AES-GCM of
/// nothing (the key set-up and the tag), and AES-GCM of 16 KiB.
fn per_message(c: &mut Criterion) {
    for suite in suites() {
        let mut group = c.benchmark_group(format!("per-message/{}", suite.name()));
        let mut random = [0u8; 44];
        group.bench_function("random-44", |b| {
            b.iter(|| {
                suite.fill_random(&mut random).expect("random");
                black_box(&random);
            })
        });
        let mut okm = [0u8; 16];
        group.bench_function("hkdf-sha256-16", |b| {
            b.iter(|| {
                suite
                    .hkdf_sha256(&[7; 16], &[1; 32], b"keyserver envelope v1\x01", &mut okm)
                    .expect("hkdf");
                black_box(&okm);
            })
        });
        group.bench_function("aes128-gcm-seal-0", |b| {
            b.iter(|| {
                black_box(
                    suite
                        .aes_gcm_seal_in_place(&[7; 16], &[0; 12], &[0; 81], &mut [])
                        .expect("seal"),
                )
            })
        });
        let mut buf = vec![0x5au8; 16 << 10];
        group.bench_function("aes128-gcm-seal-16k", |b| {
            b.iter(|| {
                black_box(
                    suite
                        .aes_gcm_seal_in_place(&[7; 16], &[0; 12], &[0; 81], &mut buf)
                        .expect("seal"),
                )
            })
        });
        group.finish();
    }
}

fn envelopes(c: &mut Criterion) {
    let dek = Dek::from_bytes(&[7; 16]).expect("dek");
    let id = keyserver::KeyId::from_bytes([1; 32]);
    for suite in suites() {
        let mut group = c.benchmark_group(format!("envelope/{}", suite.name()));
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let plaintext = vec![0x5au8; size];
            let mut sealed = Vec::new();
            group.bench_function(BenchmarkId::new("seal_into", size), |b| {
                b.iter(|| {
                    envelope::seal_into(&suite, &id, &dek, b"", &plaintext, &mut sealed)
                        .expect("seal");
                    black_box(&sealed);
                })
            });
            let mut opened = Vec::new();
            group.bench_function(BenchmarkId::new("open_into", size), |b| {
                b.iter(|| {
                    envelope::open_into(&suite, &dek, b"", &sealed, &mut opened).expect("open");
                    black_box(&opened);
                })
            });
        }
        group.finish();
    }
}

fn clients(c: &mut Criterion) {
    for version in [envelope::Version::V1, envelope::Version::V2] {
        client(c, AwsLc::new(), version);
        client(c, RustCrypto::new(), version);
        client(c, OpenSsl::new(), version);
    }
}

fn client<C: CipherSuite + Clone>(c: &mut Criterion, suite: C, version: envelope::Version) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    {
        let name = suite.name();
        // No KEK pool: its refill threads would make RSA keys on the other
        // core while the client is measured (seen in `perf`).
        let server = Arc::new(KeyServer::new(suite, MemoryStorage::new()).with_kek_pool(0, 1));
        let client = InProcess::client(server).with_envelope(version);
        let kek = runtime.block_on(client.generate()).expect("generate");
        let group_name = match version {
            envelope::Version::V1 => format!("client/{name}"),
            _ => format!("client-v2/{name}"),
        };
        let mut group = c.benchmark_group(group_name);
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let plaintext = vec![0x5au8; size];
            let mut sealed = Vec::new();
            // The DEK is fetched once, then cached for the whole run.
            runtime
                .block_on(client.encrypt_into(&kek, &plaintext, b"", &mut sealed))
                .expect("encrypt");
            group.bench_function(BenchmarkId::new("encrypt_into", size), |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            client
                                .encrypt_into(&kek, &plaintext, b"", &mut sealed)
                                .await
                                .expect("encrypt");
                        }
                        start.elapsed()
                    })
                })
            });
            let mut opened = Vec::new();
            group.bench_function(BenchmarkId::new("decrypt_into", size), |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            client
                                .decrypt_into(&kek, &sealed, b"", &mut opened)
                                .await
                                .expect("decrypt");
                        }
                        start.elapsed()
                    })
                })
            });
            group.bench_function(BenchmarkId::new("encrypt", size), |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            black_box(client.encrypt(&kek, &plaintext).await.expect("encrypt"));
                        }
                        start.elapsed()
                    })
                })
            });
        }
        group.finish();
    }
}

fn rsa_fresh_key(c: &mut Criterion) {
    let aws = AwsLc::new();
    let kek = Kek::from_pkcs8_der(&aws.generate_rsa(3072).expect("keygen")).expect("kek");
    let wrapped = aws
        .rsa_oaep_wrap(kek.public_key_der(), &[7; 16])
        .expect("wrap");
    let mut group = c.benchmark_group("rsa3072-fresh-key");
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("aws-lc-rs-parse-and-decrypt", |b| {
        let mut out = [0u8; 384];
        b.iter(|| {
            let key = PrivateDecryptingKey::from_pkcs8(kek.pkcs8_der()).expect("key");
            let key = OaepPrivateDecryptingKey::new(key).expect("oaep");
            black_box(
                key.decrypt(&OAEP_SHA256_MGF1SHA256, &wrapped, &mut out, None)
                    .expect("decrypt")
                    .len(),
            )
        })
    });
    for suite in suites() {
        group.bench_function(format!("{}-check-and-unwrap", suite.name()), |b| {
            b.iter(|| {
                suite.rsa_check_key_pair(kek.pkcs8_der()).expect("check");
                black_box(
                    suite
                        .rsa_oaep_unwrap(kek.pkcs8_der(), &wrapped)
                        .expect("unwrap"),
                )
            })
        });
        // What the server does per `get_key` once it has checked this
        // KEK document before (record::CheckedKeks).
        group.bench_function(format!("{}-unwrap", suite.name()), |b| {
            b.iter(|| {
                black_box(
                    suite
                        .rsa_oaep_unwrap(kek.pkcs8_der(), &wrapped)
                        .expect("unwrap"),
                )
            })
        });
    }
    group.finish();
}

fn p256_fresh_key(c: &mut Criterion) {
    let aws = AwsLc::new();
    let kek = aws.generate_ec(Curve::P256).expect("keygen");
    let peer = agreement::PrivateKey::generate(&ECDH_P256).expect("ephemeral");
    let point = peer.compute_public_key().expect("point");
    let point = point.as_ref().to_vec();
    let mut group = c.benchmark_group("p256-fresh-key");
    group.bench_function("aws-lc-rs-parse-and-agree", |b| {
        b.iter(|| {
            let key = agreement::PrivateKey::from_private_key_der(&ECDH_P256, &kek).expect("key");
            let peer = UnparsedPublicKey::new(&ECDH_P256, &point);
            black_box(agreement::agree(&key, peer, (), |shared| Ok(shared[0])).expect("agree"))
        })
    });
    group.bench_function("awslc-ecdh", |b| {
        b.iter(|| black_box(aws.ecdh(&kek, &point).expect("ecdh").len()))
    });
    group.finish();
}

criterion_group!(
    benches,
    limit,
    per_message,
    envelopes,
    clients,
    rsa_fresh_key,
    p256_fresh_key
);
criterion_main!(benches);
