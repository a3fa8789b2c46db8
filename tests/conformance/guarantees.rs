//! Guarantees of SECURITY.md and docs/LIFECYCLE.md that a hostile review
//! broke, each proven through the policy stack (`keyserver::policy`), the
//! road every call takes: the lifecycle rule by enumeration, a forged KEK
//! learning nothing, and `max_keys` holding through rotation.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use keyserver::api::{Call, Caller, Identity, Reply};
use keyserver::backends::{MemoryStorage, RustCrypto};
use keyserver::policy::{Auth, AuthFile, AuthPolicy, Policy, PrincipalSpec};
use keyserver::{
    Change, KekAlg, KeyFilter, KeyMeta, KeyServer, KeyService, KeyState, KeyStorage, Strength,
    Target,
};

const OPERATOR: &[&str] = &[
    "describe",
    "suspend",
    "resume",
    "compromised",
    "destroy",
    "cancel_destroy",
    "list_keys",
];

fn auth() -> Arc<Auth> {
    let spec = |name: &str, token: &str, methods: &[&str], max_keys: Option<u64>| PrincipalSpec {
        name: name.into(),
        token_sha256: Some(AuthPolicy::token_hash(token)),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        max_keys,
        ..PrincipalSpec::default()
    };
    Auth::new(
        AuthPolicy::new(&AuthFile {
            principals: vec![
                spec("ops", "ops-token", OPERATOR, None),
                spec(
                    "app",
                    "app-token",
                    &["generate", "get_key", "get_wrapped", "describe", "status"],
                    Some(3),
                ),
                spec(
                    "other",
                    "other-token",
                    &["generate", "get_key", "describe", "rotate", "status"],
                    None,
                ),
            ],
        })
        .unwrap(),
    )
}

fn as_principal(name: &str) -> Caller {
    Caller::with_identity(Identity::Principal(name.into()))
}

/// A key's lifecycle configuration: the state stored and the state to go
/// back to (all the state table reads).
type Config = (KeyState, Option<KeyState>);

fn usable(state: KeyState) -> (bool, bool) {
    (state.allows_decrypt(), state.allows_encrypt())
}

/// What the table says `change` does to `config` for a caller with the
/// grant (`None`: refused with code 14).
fn table(change: Change, (state, previous): Config) -> Option<Config> {
    let to = change.apply(state, previous)?;
    let previous = match change {
        Change::Suspend | Change::Destroy => Some(state),
        Change::Compromised => previous,
        Change::Resume | Change::CancelDestroy => None,
        other => panic!("a change the table does not know: {other:?}"),
    };
    Some((to, previous))
}

/// One caller of the enumeration: who, and whether it presents the KEK or
/// the key id.
struct Actor {
    name: &'static str,
    caller: Caller,
    granted: bool,
    with_kek: bool,
}

/// From every state, every sequence of up to 4 changes by every kind of
/// caller: a caller without the lifecycle grant never makes a key usable
/// for something it was not usable for before, every change does what the
/// state table says (or is refused, changing nothing), and `get_key`
/// serves the DEK exactly when the state allows it.
///
/// The outcome of a change depends only on the key's configuration (its
/// state and the state to go back to), so a breadth-first walk that tries
/// every change of every caller from every configuration reachable in up
/// to 4 steps covers every such sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_caller_without_the_grant_ever_widens_a_key() {
    let actors_with_auth = {
        let mut actors = Vec::new();
        for (name, granted) in [
            ("ops", true),
            ("app", false),
            ("anonymous", false),
            ("other", false),
        ] {
            for with_kek in [true, false] {
                actors.push(Actor {
                    name,
                    caller: as_principal(name),
                    granted,
                    with_kek,
                });
            }
        }
        actors
    };
    enumerate(Policy::new().with_auth(auth()), actors_with_auth).await;
    // Without an auth file: anyone on loopback owns the server; anyone on a
    // listener reachable from other hosts may only restrict.
    let mut actors_without_auth = Vec::new();
    for (name, remote) in [("loopback", false), ("remote", true)] {
        for with_kek in [true, false] {
            actors_without_auth.push(Actor {
                name,
                caller: Caller::with_identity(Identity::Anonymous { remote }),
                granted: !remote,
                with_kek,
            });
        }
    }
    enumerate(Policy::new(), actors_without_auth).await;
}

async fn enumerate(policy: Policy, actors: Vec<Actor>) {
    let keys = Arc::new(
        KeyServer::new(RustCrypto::new(), MemoryStorage::new())
            .with_kek_alg(KekAlg::Ec)
            .with_destroy_window(Duration::from_secs(3600)),
    );
    let stack = policy.wrap(Arc::clone(&keys) as Arc<dyn KeyService>);
    let kek = keys.generate().await.unwrap();
    let id = kek.id();
    let record = keys.storage().get(&id).await.unwrap();
    let dek = keys.get(&kek).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let base = KeyMeta::new(id, Strength::S128, now, Some("app".into()));
    let set = |(state, previous): Config| {
        let keys = Arc::clone(&keys);
        let record = record.clone();
        let mut meta = base.clone();
        async move {
            meta.state = state;
            meta.previous = previous;
            meta.destroy_at = (state == KeyState::DestroyPending).then_some(u64::MAX / 4);
            let storage = keys.storage();
            let _ = storage.delete(&id).await;
            if state != KeyState::Destroyed {
                storage.put(&record).await.unwrap();
            }
            storage.put_meta(&meta).await.unwrap();
        }
    };
    let starts: Vec<Config> = vec![
        (KeyState::Active, None),
        (KeyState::Deactivated, None),
        (KeyState::Suspended, Some(KeyState::Active)),
        (KeyState::Suspended, Some(KeyState::Deactivated)),
        (KeyState::Compromised, None),
        (KeyState::DestroyPending, Some(KeyState::Active)),
        (KeyState::DestroyPending, Some(KeyState::Suspended)),
        (KeyState::Destroyed, None),
    ];
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<(Config, usize)> = starts.into_iter().map(|c| (c, 0)).collect();
    let mut tried = 0;
    while let Some((config, depth)) = queue.pop_front() {
        if depth == 4 || !seen.insert(format!("{config:?}")) {
            continue;
        }
        for actor in &actors {
            for change in Change::ALL {
                set(config).await;
                let target = if actor.with_kek {
                    Target::Kek(kek.clone())
                } else {
                    Target::KeyId(id)
                };
                let result = stack
                    .call_as(&actor.caller, Call::Change(change, target))
                    .await;
                tried += 1;
                let meta = keys.storage().get_meta(&id).await.unwrap().unwrap();
                let after: Config = (meta.state, meta.previous);
                let what = format!(
                    "{} ({}) {} from {config:?}",
                    actor.name,
                    if actor.with_kek { "KEK" } else { "key id" },
                    change.name()
                );
                // The invariant.
                if !actor.granted {
                    let (d0, e0) = usable(config.0);
                    let (d1, e1) = usable(after.0);
                    assert!(
                        (!d1 || d0) && (!e1 || e0),
                        "{what} widened the key to {after:?}"
                    );
                }
                // The table, and who may.
                let permitted = actor.granted || (actor.with_kek && change.restricts());
                let expected = if permitted {
                    table(change, config)
                } else {
                    None
                };
                let expected = expected.filter(|(to, _)| {
                    actor.granted || {
                        let (d0, e0) = usable(config.0);
                        let (d1, e1) = usable(*to);
                        (!d1 || d0) && (!e1 || e0)
                    }
                });
                match (&result, expected) {
                    (Ok(Reply::Info(info)), Some(next)) => {
                        assert_eq!(after, next, "{what}");
                        assert_eq!(info.state, next.0, "{what}");
                    }
                    (Err(e), None) => {
                        assert_eq!(after, config, "{what}: refused, yet the key changed");
                        let code = e.code();
                        assert!(
                            code == 13 || code == 14,
                            "{what}: refused with code {code}: {e}"
                        );
                        if !permitted {
                            assert_eq!(code, 13, "{what}: {e}");
                        }
                    }
                    (result, expected) => {
                        panic!("{what}: {result:?}, the table says {expected:?}")
                    }
                }
                // The data path follows the state.
                let served = keys.get(&kek).await;
                assert_eq!(
                    served.is_ok(),
                    after.0.allows_decrypt(),
                    "{what}: get_key in {after:?}: {served:?}"
                );
                if let Ok(got) = served {
                    assert_eq!(got, dek);
                }
                if after != config {
                    queue.push_back((after, depth + 1));
                }
            }
        }
    }
    assert!(seen.len() >= 8, "{seen:?}");
    assert!(tried >= 8 * actors.len() * Change::ALL.len(), "{tried}");
}

/// A KEK made of a victim's public key and a made-up private part learns
/// nothing of the victim's key: one answer (code 2, invalid key) whether the
/// key is live, suspended, destroyed or was never stored, through
/// `get_key`, `rotate` and a state change alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_kek_learns_nothing_of_the_state() {
    let keys = Arc::new(
        KeyServer::new(RustCrypto::new(), MemoryStorage::new())
            .with_destroy_window(Duration::from_secs(0)),
    );
    let stack = Policy::new().wrap(Arc::clone(&keys) as Arc<dyn KeyService>);
    let live = keys.generate().await.unwrap();
    let suspended = keys.generate().await.unwrap();
    keys.change_state(Change::Suspend, &Target::Kek(suspended.clone()))
        .await
        .unwrap();
    let destroyed = keys.generate().await.unwrap();
    keys.change_state(Change::Destroy, &Target::Kek(destroyed.clone()))
        .await
        .unwrap();
    let elsewhere = KeyServer::new(RustCrypto::new(), MemoryStorage::new());
    let unknown = elsewhere.generate().await.unwrap();
    let caller = Caller::with_identity(Identity::Anonymous { remote: false });
    let mut answers = std::collections::BTreeMap::new();
    for (what, victim) in [
        ("live", &live),
        ("suspended", &suspended),
        ("destroyed", &destroyed),
        ("unknown", &unknown),
    ] {
        for (n, private) in [vec![0x5a_u8; 192], vec![0x7f; 384]].iter().enumerate() {
            let forged = crate::forgery::forge(victim, private).unwrap();
            for call in [
                Call::GetKey(forged.clone()),
                Call::Rotate(forged.clone(), None),
                Call::Change(Change::Compromised, Target::Kek(forged.clone())),
            ] {
                let name = call.method().name;
                let e = stack.call_as(&caller, call).await.unwrap_err();
                assert_eq!(e.code(), 2, "{what} {name}: {e}");
                answers
                    .entry((name, n))
                    .or_insert_with(BTreeSet::new)
                    .insert(e.to_string());
            }
        }
    }
    // One answer per method and forgery, whatever the state.
    assert_eq!(answers.len(), 6, "{answers:#?}");
    assert!(answers.values().all(|a| a.len() == 1), "{answers:#?}");
}

/// Rotating a key that was already rotated makes a new active key for the
/// same DEK: after an operator restricted the newer key, that would make
/// the DEK usable for encryption again. Only a caller granted the widening
/// change (`resume`) may; a holder granted `rotate` alone is refused
/// (code 14), and the operator's restriction stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_rotating_a_rotated_key_needs_the_lifecycle_grant() {
    let keys =
        Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()).with_kek_alg(KekAlg::Ec));
    let stack = Policy::new()
        .with_auth(auth())
        .wrap(Arc::clone(&keys) as Arc<dyn KeyService>);
    let (other, ops) = (as_principal("other"), as_principal("ops"));
    let Reply::Kek(first) = stack
        .call_as(&other, Call::Generate(None, None))
        .await
        .unwrap()
    else {
        panic!("not a KEK")
    };
    let rotate = |kek: keyserver::Kek| {
        let (stack, other) = (Arc::clone(&stack), other.clone());
        async move {
            match stack.call_as(&other, Call::Rotate(kek, None)).await {
                Ok(Reply::Kek(new)) => Ok(new),
                Ok(_) => panic!("not a KEK"),
                Err(e) => Err(e),
            }
        }
    };
    // While the newest key is active, rotating again widens nothing (an
    // answer lost): allowed.
    rotate(first.clone()).await.unwrap();
    let second = rotate(first.clone()).await.unwrap();
    stack
        .call_as(
            &ops,
            Call::Change(Change::Suspend, Target::KeyId(second.id())),
        )
        .await
        .unwrap();
    let before = keys.len();
    let err = rotate(first.clone()).await.unwrap_err();
    assert_eq!(err.code(), 14, "{err}");
    assert_eq!(keys.len(), before, "no key made");
    assert_eq!(
        keys.describe(&second.id()).await.unwrap().state,
        KeyState::Suspended
    );
    // A caller with every right (here in-process code) may.
    stack
        .call_as(&Caller::local(), Call::Rotate(first, None))
        .await
        .unwrap();
}

/// `max_keys` bounds the live keys a principal owns whatever sequence of
/// calls anyone makes: another principal rotating its keys (a rotated key
/// stays live, deactivated) is refused at the owner's quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_keys_holds_through_rotation_by_another_principal() {
    let keys =
        Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()).with_kek_alg(KekAlg::Ec));
    let stack = Policy::new()
        .with_auth(auth())
        .wrap(Arc::clone(&keys) as Arc<dyn KeyService>);
    let app = as_principal("app");
    let other = as_principal("other");
    let mut keks = Vec::new();
    for _ in 0..3 {
        keks.push(
            stack
                .call_as(&app, Call::Generate(None, None))
                .await
                .unwrap()
                .into_kek()
                .unwrap(),
        );
    }
    let fourth = stack.call_as(&app, Call::Generate(None, None)).await;
    assert_eq!(
        fourth.unwrap_err().code(),
        13,
        "the quota holds for generate"
    );
    for kek in &keks {
        let rotated = stack.call_as(&other, Call::Rotate(kek.clone(), None)).await;
        assert_eq!(
            rotated.unwrap_err().code(),
            13,
            "another principal's rotation counts against the owner's quota"
        );
    }
    let owned = keys
        .list_keys(&KeyFilter {
            owner: Some("app".into()),
            ..KeyFilter::default()
        })
        .await
        .unwrap();
    let live = owned
        .keys
        .iter()
        .filter(|k| k.state != KeyState::Destroyed)
        .count();
    assert_eq!(live, 3, "{owned:?}");
    // Under its quota, the owner's key may be rotated by anyone granted
    // rotate, and the new key is the owner's.
    stack
        .call_as(
            &as_principal("ops"),
            Call::Change(Change::Destroy, Target::KeyId(keks[0].id())),
        )
        .await
        .unwrap();
    // keks[0] is destroy-pending (it still counts until destroyed): the
    // quota is still full.
    let rotated = stack
        .call_as(&other, Call::Rotate(keks[1].clone(), None))
        .await;
    assert_eq!(rotated.unwrap_err().code(), 13);
}

/// 20 `generate` requests whose sockets are reset before the answer, with
/// an auth file and an audit log: every key stored has its audit line and
/// its owner (so it counts against `max_keys`), or nothing is stored.
#[cfg(feature = "transport-jsonrpc-server")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generate_whose_client_hangs_up_is_stored_whole_or_not_at_all() {
    use keyserver::policy::{AuditConfig, AuditKey, AuditLog, DEFAULT_AUDIT_ROTATE};
    use keyserver::transports::{HttpServer, ServerConfig};
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = AuditKey::new(vec![0x42; 32]).unwrap();
    let log = AuditLog::open(AuditConfig {
        path: path.clone(),
        key: key.clone(),
        rotate_bytes: DEFAULT_AUDIT_ROTATE,
    })
    .unwrap();
    // RSA keys made on demand take long enough for the reset to arrive
    // while the key is being made.
    let keys = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
    let service = Policy::new()
        .with_auth(auth())
        .with_audit(Arc::clone(&log))
        .wrap(Arc::clone(&keys) as Arc<dyn KeyService>);
    let http = HttpServer::start(
        service,
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let addr = http.local_addr();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"generate","params":[]}"#;
    let request = format!(
        "POST /jsonrpc HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer other-token\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut hangups = Vec::new();
    for i in 0..20u64 {
        let request = request.clone();
        hangups.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            // Some reset at once, some while the key is being made.
            tokio::time::sleep(Duration::from_millis(5 * (i % 10))).await;
            stream.set_zero_linger().unwrap();
            drop(stream);
        }));
    }
    for h in hangups {
        h.await.unwrap();
    }
    // Whatever was started finishes (generation takes well under this).
    let mut settled = 0;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = keys.len();
        if n == settled
            && keys.gauges().generate_running == 0
            && keys.gauges().generate_waiting == 0
        {
            break;
        }
        settled = n;
    }
    // A task that stored its key has its owner and audit line written
    // microseconds later: give the last ones time before the log closes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    http.shutdown().await;
    let log_for_close = Arc::clone(&log);
    tokio::task::spawn_blocking(move || log_for_close.close())
        .await
        .unwrap();
    let stored = keys.storage().list_all().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let audited: BTreeSet<String> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["method"] == "generate" && v["code"] == 0 && v["principal"] == "other")
        .filter_map(|v| v["key_id"].as_str().map(str::to_owned))
        .collect();
    for id in &stored {
        assert!(
            audited.contains(&id.to_string()),
            "key {id} stored without its audit line:\n{text}"
        );
        let meta = keys.storage().get_meta(id).await.unwrap();
        assert_eq!(
            meta.and_then(|m| m.owner).as_deref(),
            Some("other"),
            "key {id} stored without its owner"
        );
    }
    assert_eq!(audited.len(), stored.len(), "every audited key is stored");
    keyserver::policy::verify_audit(&key, &[path], keyserver::policy::VerifyOptions::default())
        .unwrap();
}
