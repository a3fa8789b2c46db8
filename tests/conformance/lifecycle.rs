//! Key lifecycle end to end (docs/LIFECYCLE.md): every state and what it
//! allows, over both protocols; rotation without touching data; scheduled
//! destruction leaving a tombstone; owners, quotas and operator grants;
//! the cryptoperiod; and states that survive a restart of the file store.

use std::sync::Arc;
use std::time::Duration;

use keyserver::backends::{FileStorage, MemoryStorage, RustCrypto};
use keyserver::policy::{Auth, AuthFile, AuthPolicy, Policy, PrincipalSpec};
use keyserver::transports::{HttpServer, JsonRpc, ServerConfig, XmlRpc};
use keyserver::{
    Change, Encryption, KeyClient, KeyFilter, KeyServer, KeyService, KeyState, KeyStorage, Target,
    Transport,
};

const APP: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OPS: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn policy() -> Arc<Auth> {
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
                spec(
                    "app",
                    APP,
                    &[
                        "generate",
                        "get_key",
                        "get_wrapped",
                        "describe",
                        "rotate",
                        "status",
                    ],
                    Some(3),
                ),
                spec(
                    "ops",
                    OPS,
                    &[
                        "describe",
                        "suspend",
                        "resume",
                        "compromised",
                        "destroy",
                        "cancel_destroy",
                        "list_keys",
                    ],
                    None,
                ),
            ],
        })
        .unwrap(),
    )
}

async fn serve<S: KeyStorage>(keys: Arc<KeyServer<RustCrypto, S>>) -> HttpServer {
    HttpServer::start(
        Policy::new()
            .with_auth(policy())
            .wrap(keys as Arc<dyn KeyService>),
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

fn transports(url: &str, token: &str) -> Vec<Box<dyn Transport>> {
    crate::common::clients(url, Some(token))
}

fn server(window: Duration) -> Arc<KeyServer<RustCrypto, MemoryStorage>> {
    Arc::new(
        KeyServer::new(RustCrypto::new(), MemoryStorage::new())
            .with_kek_pool(4, 1)
            .with_destroy_window(window),
    )
}

fn state_error(e: keyserver::Error) -> KeyState {
    assert_eq!(e.code(), 14, "{e}");
    match e {
        keyserver::Error::KeyState { state, .. } => state,
        other => panic!("not a state error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_allows_what_the_table_says() {
    state_table(server(Duration::from_secs(3600))).await;
    let dir = tempfile::tempdir().unwrap();
    state_table(Arc::new(
        KeyServer::new(
            RustCrypto::new(),
            FileStorage::open(dir.path().join("store")).await.unwrap(),
        )
        .with_kek_pool(4, 1)
        .with_destroy_window(Duration::from_secs(3600)),
    ))
    .await;
}

async fn state_table<S: KeyStorage>(keys: Arc<KeyServer<RustCrypto, S>>) {
    let http = serve(Arc::clone(&keys)).await;
    let url = http.url();
    let ops = transports(&url, OPS);
    for app in transports(&url, APP) {
        let kek = app.generate(None).await.unwrap();
        let id = kek.id();
        let info = app.describe(&id).await.unwrap();
        assert_eq!(info.state, KeyState::Active);
        assert_eq!(info.owner.as_deref(), Some("app"));
        assert!(info.deactivate_at.unwrap() > info.created + 700 * 86_400);
        let dek = app.get_key(&kek).await.unwrap();

        // The holder of the KEK suspends its own key (no grant needed).
        let info = app
            .change(Change::Suspend, &Target::Kek(kek.clone()))
            .await
            .unwrap();
        assert_eq!(info.state, KeyState::Suspended);
        assert_eq!(
            state_error(app.get_key(&kek).await.unwrap_err()),
            KeyState::Suspended
        );
        assert_eq!(
            state_error(app.get_wrapped(&id).await.unwrap_err()),
            KeyState::Suspended
        );
        // A second suspend is not a transition of a suspended key.
        assert_eq!(
            state_error(
                app.change(Change::Suspend, &Target::Kek(kek.clone()))
                    .await
                    .unwrap_err()
            ),
            KeyState::Suspended
        );
        // By key id: only a principal granted the method.
        assert_eq!(
            app.change(Change::Resume, &Target::KeyId(id))
                .await
                .unwrap_err()
                .code(),
            13
        );
        let info = ops[0]
            .change(Change::Resume, &Target::KeyId(id))
            .await
            .unwrap();
        assert_eq!(info.state, KeyState::Active);
        assert_eq!(app.get_key(&kek).await.unwrap(), dek);

        // Compromised: decrypt only.
        let info = ops[1]
            .change(Change::Compromised, &Target::KeyId(id))
            .await
            .unwrap();
        assert_eq!(info.state, KeyState::Compromised);
        assert_eq!(app.get_key(&kek).await.unwrap(), dek);
        assert!(app.get_wrapped(&id).await.is_ok());

        // Destroy-pending: nothing, and cancellable back to compromised.
        let info = app
            .change(Change::Destroy, &Target::Kek(kek.clone()))
            .await
            .unwrap();
        assert_eq!(info.state, KeyState::DestroyPending);
        assert!(info.destroy_at.unwrap() >= info.created + 3599);
        assert_eq!(
            state_error(app.get_key(&kek).await.unwrap_err()),
            KeyState::DestroyPending
        );
        // Undoing a restriction needs the grant, even with the KEK: a
        // thief holding a stolen KEK cannot undo an operator's action.
        for undo in [Change::CancelDestroy, Change::Resume] {
            assert_eq!(
                app.change(undo, &Target::Kek(kek.clone()))
                    .await
                    .unwrap_err()
                    .code(),
                13
            );
        }
        let info = ops[0]
            .change(Change::CancelDestroy, &Target::KeyId(id))
            .await
            .unwrap();
        assert_eq!(info.state, KeyState::Compromised);
        assert!(info.destroy_at.is_none());
        // A compromised key cannot be made active again by resume.
        assert_eq!(
            state_error(
                ops[1]
                    .change(Change::Resume, &Target::KeyId(id))
                    .await
                    .unwrap_err()
            ),
            KeyState::Compromised
        );
    }
    http.shutdown().await;
}

/// Only an active key encrypts new data: the server's own encrypt and
/// `KeyClient` (which learns the state with the DEK) refuse the others,
/// and both still decrypt under a deactivated or compromised key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_active_key_encrypts_new_data() {
    let keys = server(Duration::from_secs(3600));
    let http = serve(Arc::clone(&keys)).await;
    let url = http.url();
    let kek = keys.generate().await.unwrap();
    let sealed = keys.encrypt(&kek, b"old data").await.unwrap();
    let ops = transports(&url, OPS).swap_remove(0);
    ops.change(Change::Compromised, &Target::KeyId(kek.id()))
        .await
        .unwrap();
    assert_eq!(
        state_error(keys.encrypt(&kek, b"new").await.unwrap_err()),
        KeyState::Compromised
    );
    assert_eq!(&*keys.decrypt(&kek, &sealed).await.unwrap(), b"old data");
    for transport in transports(&url, APP) {
        let client = KeyClient::new(transport, RustCrypto::new());
        assert_eq!(&*client.decrypt(&kek, &sealed).await.unwrap(), b"old data");
        assert_eq!(
            state_error(client.encrypt(&kek, b"new").await.unwrap_err()),
            KeyState::Compromised
        );
    }
    http.shutdown().await;
}

/// `rotate`: the new KEK decrypts data sealed before (server-side and
/// through `KeyClient`, both unwrap modes), encrypts new data; the old key
/// is deactivated and points to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_old_data_readable_with_the_new_kek() {
    let keys = server(Duration::ZERO);
    let http = serve(Arc::clone(&keys)).await;
    let url = http.url();
    for (n, transport) in transports(&url, APP).into_iter().enumerate() {
        let mode = if n == 0 {
            keyserver::UnwrapMode::Server
        } else {
            keyserver::UnwrapMode::Client
        };
        let client = KeyClient::new(transport, RustCrypto::new()).with_unwrap_mode(mode);
        let old = client.generate().await.unwrap();
        let sealed = client.encrypt(&old, b"before the rotation").await.unwrap();
        let mut stream = Vec::new();
        client
            .encrypt_stream(&old, &b"a stream before"[..], &mut stream)
            .await
            .unwrap();
        let new = client
            .rotate(&old, Some(keyserver::Strength::S128))
            .await
            .unwrap();
        assert_ne!(new.id(), old.id());
        assert_eq!(
            client.get(&new).await.unwrap(),
            client.get(&old).await.unwrap()
        );
        assert_eq!(
            &*client.decrypt(&new, &sealed).await.unwrap(),
            b"before the rotation"
        );
        assert_eq!(
            &*keys.decrypt(&new, &sealed).await.unwrap(),
            b"before the rotation"
        );
        let mut opened = Vec::new();
        client
            .decrypt_stream(&new, &stream[..], &mut opened)
            .await
            .unwrap();
        assert_eq!(opened, b"a stream before");
        let info = client.describe(&old.id()).await.unwrap();
        assert_eq!(info.state, KeyState::Deactivated);
        assert_eq!(info.rotated_to, Some(new.id()));
        let info = client.describe(&new.id()).await.unwrap();
        assert_eq!(info.state, KeyState::Active);
        assert_eq!(info.rotated_from, Some(old.id()));
        assert_eq!(info.owner.as_deref(), Some("app"));
        assert_eq!(
            state_error(client.encrypt(&old, b"x").await.unwrap_err()),
            KeyState::Deactivated
        );
        assert!(client.encrypt(&new, b"after").await.is_ok());
        // A key may be rotated again (a rotation whose answer was lost
        // must not strand it): rotated_to names the newest successor.
        let again = client.rotate(&old, None).await.unwrap();
        assert_eq!(
            client.describe(&old.id()).await.unwrap().rotated_to,
            Some(again.id())
        );
        assert_eq!(
            client.get(&again).await.unwrap(),
            client.get(&new).await.unwrap()
        );
        client
            .change(Change::Destroy, &Target::Kek(again))
            .await
            .unwrap();
        // An unrelated KEK still does not open the data.
        let other = client.generate().await.unwrap();
        assert_eq!(
            client.decrypt(&other, &sealed).await.unwrap_err().code(),
            10
        );
        for kek in [old, new, other] {
            client
                .change(Change::Destroy, &Target::Kek(kek))
                .await
                .unwrap();
        }
    }
    http.shutdown().await;
}

/// `destroy` with a window of 0 destroys at once; with a window, at its
/// time (seen by `describe` without any sweep); either way a tombstone
/// answers "destroyed", the wrapped DEK is gone, and nothing comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destruction_leaves_a_tombstone_and_no_wrapped_dek() {
    for window in [Duration::ZERO, Duration::from_secs(2)] {
        let keys = server(window);
        let http = serve(Arc::clone(&keys)).await;
        let url = http.url();
        let app = transports(&url, APP).swap_remove(1);
        let kek = app.generate(None).await.unwrap();
        let id = kek.id();
        let info = app
            .change(Change::Destroy, &Target::Kek(kek.clone()))
            .await
            .unwrap();
        if window.is_zero() {
            assert_eq!(info.state, KeyState::Destroyed);
        } else {
            assert_eq!(info.state, KeyState::DestroyPending);
            assert!(keys.storage().contains(&id).await.unwrap(), "not yet");
            tokio::time::sleep(window + Duration::from_millis(1100)).await;
            assert_eq!(app.describe(&id).await.unwrap().state, KeyState::Destroyed);
        }
        assert!(!keys.storage().contains(&id).await.unwrap(), "record gone");
        assert!(!app.contains(&id).await.unwrap_or(false));
        assert_eq!(
            state_error(app.get_key(&kek).await.unwrap_err()),
            KeyState::Destroyed
        );
        assert_eq!(
            state_error(app.get_wrapped(&id).await.unwrap_err()),
            KeyState::Destroyed
        );
        let info = app.describe(&id).await.unwrap();
        assert_eq!(
            (info.state, info.owner.as_deref()),
            (KeyState::Destroyed, Some("app"))
        );
        // Nothing leaves the destroyed state: not by its KEK, not by an
        // operator.
        let ops = transports(&url, OPS).swap_remove(0);
        for change in Change::ALL {
            let by_kek = app.change(change, &Target::Kek(kek.clone())).await;
            let expected = if change.restricts() { 14 } else { 13 };
            assert_eq!(by_kek.unwrap_err().code(), expected, "{}", change.name());
            let by_id = ops.change(change, &Target::KeyId(id)).await;
            assert_eq!(by_id.unwrap_err().code(), 14, "{}", change.name());
        }
        // A key never stored is "not found", not "destroyed".
        let never = keyserver::KeyId::from_bytes([9; 32]);
        assert_eq!(app.describe(&never).await.unwrap_err().code(), 1);
        http.shutdown().await;
    }
}

/// `max_keys`: a principal's live keys are bounded (code 13 beyond), and
/// destroying one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_bounds_live_keys_and_recovers() {
    let keys = server(Duration::ZERO);
    let http = serve(Arc::clone(&keys)).await;
    let app = transports(&http.url(), APP).swap_remove(0);
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(app.generate(None).await.unwrap());
    }
    let before = keys.status().keys;
    assert_eq!(app.generate(None).await.unwrap_err().code(), 13);
    assert_eq!(keys.status().keys, before, "nothing made over quota");
    // Rotation makes a key too.
    assert_eq!(app.rotate(&made[0], None).await.unwrap_err().code(), 13);
    app.change(Change::Destroy, &Target::Kek(made.pop().unwrap()))
        .await
        .unwrap();
    app.generate(None).await.unwrap();
    assert_eq!(app.generate(None).await.unwrap_err().code(), 13);
    http.shutdown().await;
}

/// `list_keys` for operators: by state and owner, in pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_keys_by_state_and_owner_in_pages() {
    let keys = server(Duration::from_secs(3600));
    let http = serve(Arc::clone(&keys)).await;
    let url = http.url();
    let app = transports(&url, APP).swap_remove(0);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.generate(None).await.unwrap().id());
    }
    // One made without an owner (in process, no principal).
    let unowned = keys.generate().await.unwrap().id();
    for ops in transports(&url, OPS) {
        ops.change(Change::Suspend, &Target::KeyId(ids[1]))
            .await
            .unwrap();
        let all = ops.list_keys(&KeyFilter::default()).await.unwrap();
        assert_eq!(all.keys.len(), 4);
        assert!(all.cursor.is_none());
        let suspended = ops
            .list_keys(&KeyFilter {
                state: Some(KeyState::Suspended),
                ..KeyFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            suspended.keys.iter().map(|k| k.key_id).collect::<Vec<_>>(),
            vec![ids[1]]
        );
        let owned = ops
            .list_keys(&KeyFilter {
                owner: Some("app".into()),
                ..KeyFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(owned.keys.len(), 3);
        assert!(owned.keys.iter().all(|k| k.key_id != unowned));
        // Pages of one, following the cursor.
        let mut seen = Vec::new();
        let mut filter = KeyFilter {
            limit: Some(1),
            ..KeyFilter::default()
        };
        loop {
            let page = ops.list_keys(&filter).await.unwrap();
            seen.extend(page.keys.iter().map(|k| k.key_id));
            match page.cursor {
                Some(c) => filter.cursor = Some(c),
                None => break,
            }
        }
        let mut expected = ids.clone();
        expected.push(unowned);
        expected.sort();
        assert_eq!(seen, expected);
        ops.change(Change::Resume, &Target::KeyId(ids[1]))
            .await
            .unwrap();
        // The app principal is not granted list_keys.
        assert_eq!(
            app.list_keys(&KeyFilter::default())
                .await
                .unwrap_err()
                .code(),
            13
        );
    }
    http.shutdown().await;
}

/// The cryptoperiod: an active key past it is deactivated (decrypt only),
/// without anyone changing it; a destroy window ends on time; both on an
/// injected clock, without sleeping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_cryptoperiod_is_deactivated() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let now = Arc::new(AtomicU64::new(1_800_000_000));
    let clock = |now: &Arc<AtomicU64>| -> keyserver::Clock {
        let now = Arc::clone(now);
        Arc::new(move || now.load(Ordering::SeqCst))
    };
    let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new())
        .with_cryptoperiod(Duration::from_secs(90 * 86_400))
        .with_clock(clock(&now));
    let kek = keys.generate().await.unwrap();
    let sealed = keys.encrypt(&kek, b"young").await.unwrap();
    let info = keys.describe(&kek.id()).await.unwrap();
    assert_eq!(info.created, 1_800_000_000);
    assert_eq!(info.deactivate_at, Some(1_800_000_000 + 90 * 86_400));
    // One second before the end of the period: still active.
    now.store(1_800_000_000 + 90 * 86_400 - 1, Ordering::SeqCst);
    assert_eq!(
        keys.describe(&kek.id()).await.unwrap().state,
        KeyState::Active
    );
    assert!(keys.encrypt(&kek, b"still").await.is_ok());
    now.fetch_add(1, Ordering::SeqCst);
    let info = keys.describe(&kek.id()).await.unwrap();
    assert_eq!(info.state, KeyState::Deactivated);
    assert!(info.deactivate_at.is_none());
    assert_eq!(
        state_error(keys.encrypt(&kek, b"x").await.unwrap_err()),
        KeyState::Deactivated
    );
    assert_eq!(&*keys.decrypt(&kek, &sealed).await.unwrap(), b"young");
    let past = keys
        .list_keys(&KeyFilter {
            past_cryptoperiod: true,
            ..KeyFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(past.keys.len(), 1);

    // A destroy window runs on the same clock; cancelling before its end
    // restores use.
    let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new())
        .with_destroy_window(Duration::from_secs(3600))
        .with_clock(clock(&now));
    let kek = keys.generate().await.unwrap();
    let info = keys
        .change_state(Change::Destroy, &Target::Kek(kek.clone()))
        .await
        .unwrap();
    assert_eq!(info.destroy_at, Some(now.load(Ordering::SeqCst) + 3600));
    now.fetch_add(3599, Ordering::SeqCst);
    assert_eq!(
        keys.describe(&kek.id()).await.unwrap().state,
        KeyState::DestroyPending
    );
    keys.change_state(Change::CancelDestroy, &Target::Kek(kek.clone()))
        .await
        .unwrap();
    assert!(
        keys.get(&kek).await.is_ok(),
        "cancel before the time restores use"
    );
    keys.change_state(Change::Destroy, &Target::Kek(kek.clone()))
        .await
        .unwrap();
    now.fetch_add(3600, Ordering::SeqCst);
    assert_eq!(keys.destroy_due().await.unwrap(), 1);
    assert_eq!(
        keys.describe(&kek.id()).await.unwrap().state,
        KeyState::Destroyed
    );
    assert!(!keys.contains(&kek.id()).await.unwrap());
}

async fn fill<S: KeyStorage>(keys: &KeyServer<RustCrypto, S>) -> Vec<keyserver::KeyId> {
    let mut ids = Vec::new();
    for n in 0..10_000u32 {
        let id = keyserver::KeyId::from_spki_der(format!("key {n}").as_bytes());
        let record = keyserver::WrappedDek::new(
            id,
            3072,
            keyserver::Strength::S128,
            keyserver::WrappedDek::now(),
            vec![(n % 251) as u8; 384],
        )
        .unwrap();
        keys.storage().put(&record).await.unwrap();
        ids.push(id);
    }
    ids.sort();
    ids
}

async fn page_through<S: KeyStorage>(
    keys: &KeyServer<RustCrypto, S>,
    limit: u32,
) -> Vec<keyserver::KeyId> {
    let mut seen = Vec::new();
    let mut filter = KeyFilter {
        limit: Some(limit),
        ..KeyFilter::default()
    };
    loop {
        let page = keys.list_keys(&filter).await.unwrap();
        assert!(page.keys.len() <= limit as usize);
        seen.extend(page.keys.iter().map(|k| k.key_id));
        match page.cursor {
            Some(c) => filter.cursor = Some(c),
            None => return seen,
        }
    }
}

/// `list_keys` pages through 10,000 keys (in memory, and in a file store)
/// without missing or repeating one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_keys_pages_through_ten_thousand_keys() {
    let memory = KeyServer::new(RustCrypto::new(), MemoryStorage::new());
    let ids = fill(&memory).await;
    assert_eq!(page_through(&memory, 97).await, ids);
    assert_eq!(page_through(&memory, keyserver::MAX_PAGE).await, ids);
    let dir = tempfile::tempdir().unwrap();
    let file = KeyServer::new(
        RustCrypto::new(),
        FileStorage::open_with(
            dir.path().join("s"),
            keyserver::backends::Durability::NoSync,
        )
        .await
        .unwrap(),
    );
    let ids = fill(&file).await;
    assert_eq!(page_through(&file, keyserver::MAX_PAGE).await, ids);
}

/// States live in the file store beside the records: they survive a
/// restart, a destroyed key's tombstone too; a store written before
/// lifecycle existed (records only) serves its keys as active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_survive_a_restart_of_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (suspended, destroyed, plain, wrapped) = {
        let keys = KeyServer::new(RustCrypto::new(), FileStorage::open(&path).await.unwrap())
            .with_destroy_window(Duration::ZERO);
        let a = keys.generate().await.unwrap();
        let b = keys.generate().await.unwrap();
        let c = keys.generate().await.unwrap();
        let wrapped = keys.storage().get(&b.id()).await.unwrap().encode();
        keys.change_state(Change::Suspend, &Target::Kek(a.clone()))
            .await
            .unwrap();
        keys.change_state(Change::Destroy, &Target::Kek(b.clone()))
            .await
            .unwrap();
        (a, b, c, wrapped)
    };
    // The destroyed key's wrapped DEK is in no file of the store.
    let needle = &wrapped[52..52 + 64];
    let mut files = 0;
    let mut stack = vec![path.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                files += 1;
                let bytes = std::fs::read(entry.path()).unwrap();
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds the destroyed wrapped DEK",
                    entry.path().display()
                );
            }
        }
    }
    assert!(files >= 4, "{files} files searched");
    let keys = KeyServer::new(RustCrypto::new(), FileStorage::open(&path).await.unwrap());
    assert_eq!(
        keys.describe(&suspended.id()).await.unwrap().state,
        KeyState::Suspended
    );
    assert_eq!(
        state_error(keys.get(&suspended).await.unwrap_err()),
        KeyState::Suspended
    );
    assert_eq!(
        keys.describe(&destroyed.id()).await.unwrap().state,
        KeyState::Destroyed
    );
    assert_eq!(keys.len(), 2, "the destroyed record is gone");
    // No metadata was ever written for the plain key (no owner, no change):
    // it is active, as every key of an older store is.
    assert!(keys
        .storage()
        .get_meta(&plain.id())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        keys.describe(&plain.id()).await.unwrap().state,
        KeyState::Active
    );
    assert!(keys.get(&plain).await.is_ok());
}

/// A rotated key never becomes active again, whatever sequence of changes
/// it goes through (suspend, destroy, cancel, resume).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_stays_out_of_use_for_new_data() {
    let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new())
        .with_destroy_window(Duration::from_secs(3600));
    let old = keys.generate().await.unwrap();
    let new = keys
        .rotate_for(&old, None, &keyserver::api::CallerInfo::default())
        .await
        .unwrap();
    let target = Target::KeyId(old.id());
    for change in [
        Change::Suspend,
        Change::Destroy,
        Change::CancelDestroy,
        Change::Resume,
    ] {
        keys.change_state(change, &target).await.unwrap();
    }
    assert_eq!(
        keys.describe(&old.id()).await.unwrap().state,
        KeyState::Deactivated
    );
    assert_eq!(
        state_error(keys.encrypt(&old, b"x").await.unwrap_err()),
        KeyState::Deactivated
    );
    assert!(keys.encrypt(&new, b"x").await.is_ok());
}

/// A listener off loopback without an auth file (client certificates or
/// `insecure` let it start) grants no operator methods: no state change by
/// key id, no listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_auth_file_off_loopback_there_are_no_operators() {
    let keys = server(Duration::from_secs(3600));
    let http = HttpServer::start(
        Policy::new().wrap(Arc::clone(&keys) as Arc<dyn KeyService>),
        ServerConfig {
            listen: "0.0.0.0:0".parse().unwrap(),
            insecure: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let url = format!("http://127.0.0.1:{}", http.local_addr().port());
    for t in [
        Box::new(XmlRpc::new(&url).unwrap()) as Box<dyn Transport>,
        Box::new(JsonRpc::new(&url).unwrap()),
    ] {
        let kek = t.generate(None).await.unwrap();
        let by_id = Target::KeyId(kek.id());
        assert_eq!(
            t.change(Change::Suspend, &by_id).await.unwrap_err().code(),
            13
        );
        assert_eq!(
            t.list_keys(&KeyFilter::default()).await.unwrap_err().code(),
            13
        );
        // The KEK's holder may still take its own key out of use.
        let info = t
            .change(Change::Suspend, &Target::Kek(kek.clone()))
            .await
            .unwrap();
        assert_eq!(info.state, KeyState::Suspended);
    }
    http.shutdown().await;
}

/// Puts a fresh key of `keys` into `state` (through the wire's own
/// transitions), returning its KEK and a ciphertext sealed while active.
async fn key_in<S: KeyStorage>(
    keys: &KeyServer<RustCrypto, S>,
    state: KeyState,
) -> (keyserver::Kek, Vec<u8>) {
    let kek = keys.generate().await.unwrap();
    let sealed = keys.encrypt(&kek, b"sealed while active").await.unwrap();
    let target = Target::Kek(kek.clone());
    let steps: &[Change] = match state {
        KeyState::Active => &[],
        KeyState::Suspended => &[Change::Suspend],
        KeyState::Compromised => &[Change::Compromised],
        KeyState::DestroyPending => &[Change::Destroy],
        _ => &[],
    };
    for change in steps {
        keys.change_state(*change, &target).await.unwrap();
    }
    if state == KeyState::Deactivated {
        keys.rotate_for(&kek, None, &keyserver::api::CallerInfo::default())
            .await
            .unwrap();
    }
    (kek, sealed)
}

/// Every method against every state, as docs/LIFECYCLE.md's table says,
/// on both storages (the destroyed state separately: it needs a window of
/// zero).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_table_every_method_in_every_state() {
    async fn table<S: KeyStorage>(keys: KeyServer<RustCrypto, S>, states: &[KeyState]) {
        for &state in states {
            let (kek, sealed) = key_in(&keys, state).await;
            if state == KeyState::Destroyed {
                keys.change_state(Change::Destroy, &Target::Kek(kek.clone()))
                    .await
                    .unwrap();
            }
            let id = kek.id();
            let what = |m: &str| format!("{m} in {state}");
            assert_eq!(
                keys.describe(&id).await.unwrap().state,
                state,
                "{}",
                what("describe")
            );
            let decrypts = state.allows_decrypt();
            assert_eq!(
                keys.get(&kek).await.is_ok(),
                decrypts,
                "{}",
                what("get_key")
            );
            assert_eq!(
                keys.get_wrapped(&id).await.is_ok(),
                decrypts,
                "{}",
                what("get_wrapped")
            );
            assert_eq!(
                keys.decrypt(&kek, &sealed).await.is_ok(),
                decrypts,
                "{}",
                what("decrypt")
            );
            assert_eq!(
                keys.encrypt(&kek, b"new").await.is_ok(),
                state.allows_encrypt(),
                "{}",
                what("encrypt")
            );
            assert_eq!(
                keys.contains(&id).await.unwrap(),
                state != KeyState::Destroyed,
                "{}",
                what("contains")
            );
            for change in Change::ALL {
                // Each change is tried on a fresh key in this state, so one
                // change does not move the key for the next.
                let (kek, _) = key_in(&keys, state).await;
                if state == KeyState::Destroyed {
                    keys.change_state(Change::Destroy, &Target::Kek(kek.clone()))
                        .await
                        .unwrap();
                }
                // docs/LIFECYCLE.md's "next" column, written out.
                use KeyState::*;
                let allowed = matches!(
                    (change, state),
                    (Change::Suspend, Active | Deactivated)
                        | (Change::Resume, Suspended)
                        | (Change::Compromised, Active | Deactivated | Suspended)
                        | (
                            Change::Destroy,
                            Active | Deactivated | Suspended | Compromised
                        )
                        | (Change::CancelDestroy, DestroyPending)
                );
                let result = keys.change_state(change, &Target::Kek(kek.clone())).await;
                assert_eq!(result.is_ok(), allowed, "{} in {state}", change.name());
                if let Err(e) = result {
                    assert_eq!(e.code(), 14);
                }
            }
            let rotates = matches!(state, KeyState::Active | KeyState::Deactivated);
            let rotated = keys
                .rotate_for(&kek, None, &keyserver::api::CallerInfo::default())
                .await;
            assert_eq!(rotated.is_ok(), rotates, "{}", what("rotate"));
        }
    }
    let live = [
        KeyState::Active,
        KeyState::Deactivated,
        KeyState::Suspended,
        KeyState::Compromised,
        KeyState::DestroyPending,
    ];
    let memory = || {
        KeyServer::new(RustCrypto::new(), MemoryStorage::new())
            .with_kek_pool(8, 2)
            .with_destroy_window(Duration::from_secs(3600))
    };
    table(memory(), &live).await;
    table(
        KeyServer::new(RustCrypto::new(), MemoryStorage::new())
            .with_kek_pool(8, 2)
            .with_destroy_window(Duration::ZERO),
        &[KeyState::Destroyed],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = KeyServer::new(
        RustCrypto::new(),
        FileStorage::open(dir.path().join("s")).await.unwrap(),
    )
    .with_kek_pool(8, 2)
    .with_destroy_window(Duration::from_secs(3600));
    table(file, &live).await;
}
