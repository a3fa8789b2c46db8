//! What the policy layers cost on the hot path (issue 29): the same call,
//! in process, straight to `KeyServer` and through the layers the binary
//! serves with (`Metrics ▸ Audit ▸ Authorize ▸ LifecyclePermission`):
//!
//! - `bare`: `KeyServer::call_as` with the local caller;
//! - `layers`: `Policy::new().wrap(..)`, no auth file, no audit log;
//! - `layers+auth`: with an auth file, called as its principal (the
//!   method check and the rate limiter on every call);
//! - `layers+auth+audit`: and an audit log on a file, for `get_key` only
//!   (which waits for its line's sync: the disk's cost, not the layers').
//!
//! `get_wrapped` is the cheapest call (a lookup in memory): what it gains
//! is the layers' whole cost. `get_key` adds one RSA-OAEP decryption.
//!
//! Run: `cargo bench --bench policy_layers --features
//! cipher-rustcrypto,storage-memory,policy -- --noplot`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use keyserver::api::{Call, Caller, Identity, KeyService};
use keyserver::backends::{MemoryStorage, RustCrypto};
use keyserver::policy::{
    AuditConfig, AuditKey, AuditLog, Auth, AuthFile, AuthPolicy, Policy, PrincipalSpec,
    DEFAULT_AUDIT_ROTATE,
};
use keyserver::KeyServer;

fn auth() -> Arc<Auth> {
    Auth::new(
        AuthPolicy::new(&AuthFile {
            principals: vec![PrincipalSpec {
                name: "app".into(),
                token_sha256: Some(AuthPolicy::token_hash("app-token")),
                methods: vec!["generate".into(), "get_key".into(), "get_wrapped".into()],
                ..PrincipalSpec::default()
            }],
        })
        .expect("auth file"),
    )
}

fn layers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let keys = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
    let kek = rt.block_on(keys.generate()).expect("generate");
    let id = kek.id();
    let dir = tempfile::tempdir().expect("tmp");
    let log = AuditLog::open(AuditConfig {
        path: dir.path().join("audit.log"),
        key: AuditKey::new(vec![7; 32]).expect("key"),
        rotate_bytes: DEFAULT_AUDIT_ROTATE,
    })
    .expect("audit log");
    let bare: Arc<dyn KeyService> = Arc::clone(&keys) as Arc<dyn KeyService>;
    let app = Caller::with_identity(Identity::Principal("app".into()));
    let local = Caller::local();
    let stacks: Vec<(&str, Arc<dyn KeyService>, &Caller)> = vec![
        ("bare", Arc::clone(&bare), &local),
        ("layers", Policy::new().wrap(Arc::clone(&bare)), &local),
        (
            "layers+auth",
            Policy::new().with_auth(auth()).wrap(Arc::clone(&bare)),
            &app,
        ),
        (
            "layers+auth+audit",
            Policy::new()
                .with_auth(auth())
                .with_audit(Arc::clone(&log))
                .wrap(Arc::clone(&bare)),
            &app,
        ),
    ];
    let mut group = c.benchmark_group("get_wrapped");
    // Not with the audit log: in process, unpaced, a read-only call's
    // line costs the writer more than the call costs the caller, and the
    // log answers "busy" once 65,536 lines wait (its bound, by design).
    for (name, service, caller) in stacks.iter().take(3) {
        group.bench_function(*name, |b| {
            b.iter(|| {
                black_box(
                    rt.block_on(service.call_as(caller, Call::GetWrapped(id)))
                        .expect("get_wrapped"),
                )
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("get_key");
    for (name, service, caller) in &stacks {
        group.bench_function(*name, |b| {
            b.iter(|| {
                black_box(
                    rt.block_on(service.call_as(caller, Call::GetKey(kek.clone())))
                        .expect("get_key"),
                )
            })
        });
    }
    group.finish();
    drop(stacks);
    log.close();
}

criterion_group!(benches, layers);
criterion_main!(benches);
