//! Storage conformance: every [`KeyStorage`] must pass every check here
//! (create-only puts, the documented reads, deletes and listing, lifecycle
//! metadata and tombstones, replacing a record in one step without ever
//! reviving a deleted one, 1,000 concurrent puts losing nothing, new keys
//! stored with their metadata, paged listings, and, where the storage
//! keeps them, exact owner quotas and an index of due keys). Run them all with one
//! [`storage_conformance!`](crate::storage_conformance) line.

use std::sync::Arc;

use keyserver_core::{Error, KeyId, KeyMeta, KeyState, KeyStorage, Strength, WrappedDek};

/// A record with a distinct key id for each `n`.
pub fn record(n: u32) -> WrappedDek {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id[31] = 0xa5;
    WrappedDek::new(
        KeyId::from_bytes(id),
        3072,
        Strength::S128,
        1_700_000_000 + u64::from(n),
        vec![(n % 251) as u8; 384],
    )
    .unwrap()
}

/// A record sealed under a master key (record version 2) for each `n`:
/// `record(n)` with 36 bytes of seal (a key reference, a nonce, a tag)
/// around its wrapped DEK. A storage keeps it byte for byte like any
/// other; only a seal could open it.
pub fn sealed_record(n: u32) -> WrappedDek {
    use sha2::{Digest, Sha256};
    let plain = record(n).encode();
    let body = &plain[..plain.len() - 32];
    let mut out = body[..52].to_vec();
    out[4] = 2; // version: sealed
    out[7] = 1; // AES-256-GCM
    let len = u16::from_be_bytes([out[50], out[51]]) + 36;
    out[50..52].copy_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0x5e; 8]);
    out.extend_from_slice(&[0x11; 12]);
    out.extend_from_slice(&body[52..]);
    out.extend_from_slice(&[0x22; 16]);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    WrappedDek::decode(&out, record(n).key_id()).unwrap()
}

/// `replace` swaps a stored record for another form of the same key's
/// (sealed, or sealed under another master key) in one step: readers
/// racing it see the old or the new, never neither; a key that is not
/// stored (never put, or deleted) is [`Error::NotFound`] and stays absent,
/// so a destroyed key is never brought back. Sealed records are kept byte
/// for byte.
pub async fn replace_never_revives<S: KeyStorage>(store: S) {
    let store = Arc::new(store);
    let plain = record(7);
    let sealed = sealed_record(7);
    let id = *plain.key_id();
    assert!(matches!(
        store.replace(&sealed).await,
        Err(Error::NotFound { key_id }) if key_id == id
    ));
    assert!(!store.contains(&id).await.unwrap());
    store.put(&plain).await.unwrap();
    store.put(&sealed_record(8)).await.unwrap();
    assert_eq!(
        store.get(sealed_record(8).key_id()).await.unwrap(),
        sealed_record(8)
    );
    store.replace(&sealed).await.unwrap();
    let read = store.get(&id).await.unwrap();
    assert!(read.is_sealed());
    assert_eq!(read.encode(), sealed.encode());
    assert_eq!(store.count(), 2);
    // Readers racing replaces in both directions never miss the key.
    let reader = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for _ in 0..200 {
                let got = store.get(&id).await.unwrap();
                assert_eq!(got.key_id(), &id);
            }
        })
    };
    for i in 0..50 {
        let next = if i % 2 == 0 { &plain } else { &sealed };
        store.replace(next).await.unwrap();
    }
    reader.await.unwrap();
    assert_eq!(store.count(), 2);
    assert!(store.delete(&id).await.unwrap());
    assert!(matches!(
        store.replace(&plain).await,
        Err(Error::NotFound { key_id }) if key_id == id
    ));
    assert!(!store.contains(&id).await.unwrap());
    assert_eq!(
        store.list().await.unwrap(),
        vec![*sealed_record(8).key_id()]
    );
    assert_eq!(store.count(), 1);
    // A delete racing a replace: whichever runs first, the key ends deleted.
    for n in 100..140 {
        store.put(&record(n)).await.unwrap();
        let replacing = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                match store.replace(&sealed_record(n)).await {
                    Ok(()) | Err(Error::NotFound { .. }) => {}
                    Err(e) => panic!("replace failed: {e:?}"),
                }
            })
        };
        let deleting = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.delete(record(n).key_id()).await.unwrap() })
        };
        replacing.await.unwrap();
        assert!(deleting.await.unwrap());
        assert!(
            !store.contains(record(n).key_id()).await.unwrap(),
            "a replace brought back key {n}"
        );
    }
    assert_eq!(store.count(), 1);
}

/// `put` never overwrites: a second put of the same id fails and the first
/// record stays.
pub async fn put_is_create_only<S: KeyStorage>(store: S) {
    let first = record(1);
    store.put(&first).await.unwrap();
    let mut clash =
        WrappedDek::new(*first.key_id(), 3072, Strength::S128, 5, vec![0xee; 384]).unwrap();
    let err = store.put(&clash).await.unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists { key_id } if key_id == *first.key_id()),
        "{err:?}"
    );
    assert_eq!(store.get(first.key_id()).await.unwrap(), first);
    assert_eq!(store.count(), 1);
    clash = record(2);
    store.put(&clash).await.unwrap();
    assert_eq!(store.count(), 2);
}

/// get / contains / delete / list / count behave as documented.
pub async fn crud<S: KeyStorage>(store: S) {
    let missing = *record(99).key_id();
    assert_eq!(store.count(), 0);
    assert!(store.list().await.unwrap().is_empty());
    assert!(!store.contains(&missing).await.unwrap());
    assert!(matches!(
        store.get(&missing).await,
        Err(Error::NotFound { key_id }) if key_id == missing
    ));
    assert!(!store.delete(&missing).await.unwrap());

    let records: Vec<_> = (0..10).map(record).collect();
    for r in records.iter().rev() {
        store.put(r).await.unwrap();
    }
    assert_eq!(store.count(), 10);
    for r in &records {
        assert!(store.contains(r.key_id()).await.unwrap());
        assert_eq!(&store.get(r.key_id()).await.unwrap(), r);
    }
    let mut expected: Vec<_> = records.iter().map(|r| *r.key_id()).collect();
    expected.sort();
    assert_eq!(store.list().await.unwrap(), expected, "ascending order");

    assert!(store.delete(records[3].key_id()).await.unwrap());
    assert!(!store.delete(records[3].key_id()).await.unwrap());
    assert!(!store.contains(records[3].key_id()).await.unwrap());
    assert_eq!(store.count(), 9);
    assert_eq!(store.list().await.unwrap().len(), 9);
    // A deleted id can be stored again.
    store.put(&records[3]).await.unwrap();
    assert_eq!(store.count(), 10);
}

/// 1,000 concurrent puts from many tasks lose nothing, and concurrent puts of
/// one id let exactly one win.
pub async fn concurrent_puts_lose_nothing<S: KeyStorage>(store: S) {
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for t in 0..20u32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for i in 0..50u32 {
                store.put(&record(t * 50 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.count(), 1000);
    assert_eq!(store.list().await.unwrap().len(), 1000);
    for n in 0..1000 {
        assert_eq!(store.get(record(n).key_id()).await.unwrap(), record(n));
    }

    let racers: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.put(&record(5000)).await.is_ok() })
        })
        .collect();
    let mut wins = 0;
    for r in racers {
        wins += usize::from(r.await.unwrap());
    }
    assert_eq!(wins, 1, "exactly one concurrent put of one id succeeds");
    assert_eq!(store.count(), 1001);
}

/// Lifecycle metadata: none until written, replaced whole by `put_meta`,
/// kept after the record is deleted (the tombstone), and listed by
/// `list_all` with or without a record. A storage that keeps no lifecycle
/// (`keeps_lifecycle() == false`) must say so by refusing `put_meta`.
pub async fn lifecycle_metadata<S: KeyStorage>(store: S) {
    let rec = record(7);
    let id = *rec.key_id();
    // get_with_meta reads what get and get_meta read, in one go.
    async fn both<S: KeyStorage>(store: &S, id: &KeyId) -> (Option<WrappedDek>, Option<KeyMeta>) {
        store.get_with_meta(id).await.unwrap()
    }
    if !store.keeps_lifecycle() {
        assert!(store.get_meta(&id).await.unwrap().is_none());
        let meta = KeyMeta::new(id, Strength::S128, 1, None);
        assert!(store.put_meta(&meta).await.is_err());
        assert_eq!(both(&store, &id).await, (None, None));
        store.put(&rec).await.unwrap();
        assert_eq!(both(&store, &id).await, (Some(rec), None));
        return;
    }
    assert!(store.get_meta(&id).await.unwrap().is_none());
    assert_eq!(both(&store, &id).await, (None, None), "nothing stored");
    store.put(&rec).await.unwrap();
    assert!(
        store.get_meta(&id).await.unwrap().is_none(),
        "no metadata until written"
    );
    assert_eq!(
        both(&store, &id).await,
        (Some(rec.clone()), None),
        "a record alone"
    );
    let mut meta = KeyMeta::new(id, Strength::S128, rec.created(), Some("app".into()));
    store.put_meta(&meta).await.unwrap();
    assert_eq!(store.get_meta(&id).await.unwrap().as_ref(), Some(&meta));
    assert_eq!(
        both(&store, &id).await,
        (Some(rec.clone()), Some(meta.clone())),
        "a record and its metadata"
    );
    meta.state = KeyState::Suspended;
    meta.previous = Some(KeyState::Active);
    meta.changed += 5;
    store.put_meta(&meta).await.unwrap();
    assert_eq!(
        store.get_meta(&id).await.unwrap().as_ref(),
        Some(&meta),
        "replaced"
    );
    assert_eq!(store.count(), 1, "metadata is not a record");
    // The tombstone outlives the record.
    meta.state = KeyState::Destroyed;
    store.put_meta(&meta).await.unwrap();
    assert!(store.delete(&id).await.unwrap());
    assert_eq!(store.get_meta(&id).await.unwrap().as_ref(), Some(&meta));
    assert_eq!(
        both(&store, &id).await,
        (None, Some(meta.clone())),
        "a tombstone"
    );
    assert!(store.list().await.unwrap().is_empty());
    assert_eq!(store.list_all().await.unwrap(), vec![id]);
    // A second key with a record and no metadata: listed by both.
    let other = record(3);
    store.put(&other).await.unwrap();
    let mut all = vec![id, *other.key_id()];
    all.sort();
    assert_eq!(store.list_all().await.unwrap(), all);
    assert_eq!(store.list().await.unwrap(), vec![*other.key_id()]);
}

/// `put_new` stores a key's record and metadata together (an id already
/// stored is [`Error::AlreadyExists`] and changes nothing), and
/// `list_page` pages through exactly what `list_all` lists, in order, for
/// any page size.
pub async fn new_keys_and_pages<S: KeyStorage>(store: S) {
    let mut ids = Vec::new();
    for n in 0..23u32 {
        let rec = record(n * 7919 % 1000);
        let meta = (store.keeps_lifecycle() && n % 2 == 0).then(|| {
            KeyMeta::new(
                *rec.key_id(),
                Strength::S128,
                rec.created(),
                Some("app".into()),
            )
        });
        store.put_new(&rec, meta.as_ref(), None).await.unwrap();
        assert_eq!(store.get(rec.key_id()).await.unwrap(), rec);
        assert_eq!(store.get_meta(rec.key_id()).await.unwrap(), meta);
        ids.push(*rec.key_id());
    }
    let again = record(0);
    let other_meta = KeyMeta::new(*again.key_id(), Strength::S256, 1, Some("other".into()));
    let stored_meta = store.get_meta(again.key_id()).await.unwrap();
    assert!(matches!(
        store
            .put_new(
                &again,
                Some(&other_meta).filter(|_| store.keeps_lifecycle()),
                None
            )
            .await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(
        store.get_meta(again.key_id()).await.unwrap(),
        stored_meta,
        "a refused put_new writes no metadata"
    );
    assert_eq!(store.count(), 23);
    ids.sort();
    assert_eq!(store.list_all().await.unwrap(), ids);
    for size in [1u32, 2, 5, 22, 23, 100] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.list_page(after, size).await.unwrap();
            assert!(page.len() <= size as usize);
            if page.is_empty() {
                break;
            }
            after = page.last().copied();
            seen.extend(page);
        }
        assert_eq!(seen, ids, "pages of {size}");
    }
    // An owner's keys, where the storage indexes owners: exactly those
    // with that owner in their metadata, in order, paged.
    if let Some(first) = store.list_owned("app", None, 5).await.unwrap() {
        let mut owned: Vec<KeyId> = Vec::new();
        for id in &ids {
            if store
                .get_meta(id)
                .await
                .unwrap()
                .and_then(|m| m.owner)
                .as_deref()
                == Some("app")
            {
                owned.push(*id);
            }
        }
        assert_eq!(first, owned[..5]);
        let rest = store
            .list_owned("app", first.last().copied(), 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!([first, rest].concat(), owned);
        assert!(store
            .list_owned("nobody", None, 5)
            .await
            .unwrap()
            .unwrap()
            .is_empty());
    }
}

/// A storage that [counts owners](KeyStorage::counts_owners) enforces
/// `max_keys` in `put_new` exactly, concurrent puts included, and frees a
/// place when a key is destroyed; a storage with an index of due keys
/// names a destroy-pending key from its destruction time on, and a
/// destroyed key while its record is still stored, in order of when they
/// fell due.
pub async fn owner_quota_and_due_keys<S: KeyStorage>(store: S) {
    if !store.keeps_lifecycle() {
        return;
    }
    let store = Arc::new(store);
    if store.counts_owners() {
        let tasks: Vec<_> = (0..20u32)
            .map(|n| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let rec = record(100 + n);
                    let meta = KeyMeta::new(*rec.key_id(), Strength::S128, 1, Some("q".into()));
                    store.put_new(&rec, Some(&meta), Some(5)).await
                })
            })
            .collect();
        let mut stored = Vec::new();
        for (n, task) in (0..20u32).zip(tasks) {
            match task.await.unwrap() {
                Ok(()) => stored.push(n),
                Err(Error::NotPermitted) => {
                    assert!(!store.contains(record(100 + n).key_id()).await.unwrap());
                    assert!(store
                        .get_meta(record(100 + n).key_id())
                        .await
                        .unwrap()
                        .is_none());
                }
                Err(e) => panic!("put_new: {e}"),
            }
        }
        assert_eq!(stored.len(), 5, "exactly max_keys stored");
        // Another owner is not affected; a destroyed key frees a place.
        let rec = record(200);
        let meta = KeyMeta::new(*rec.key_id(), Strength::S128, 1, Some("r".into()));
        store.put_new(&rec, Some(&meta), Some(5)).await.unwrap();
        let rec = record(201);
        let meta = KeyMeta::new(*rec.key_id(), Strength::S128, 1, Some("q".into()));
        assert!(matches!(
            store.put_new(&rec, Some(&meta), Some(5)).await,
            Err(Error::NotPermitted)
        ));
        let gone = record(100 + stored[0]);
        let mut tomb = store.get_meta(gone.key_id()).await.unwrap().unwrap();
        tomb.state = KeyState::Destroyed;
        store.put_meta(&tomb).await.unwrap();
        store.put_new(&rec, Some(&meta), Some(5)).await.unwrap();
    }
    let Some(none) = store.due_keys(u64::MAX, None, 100).await.unwrap() else {
        return;
    };
    let mut expect: Vec<(u64, KeyId)> = none;
    let pending = |n: u32, at: u64| {
        let rec = record(n);
        let mut meta = KeyMeta::new(*rec.key_id(), Strength::S128, 1, None);
        meta.state = KeyState::DestroyPending;
        meta.previous = Some(KeyState::Active);
        meta.destroy_at = Some(at);
        (rec, meta)
    };
    for (n, at) in [(300u32, 5_000u64), (301, 4_000), (302, 6_000)] {
        let (rec, meta) = pending(n, at);
        store.put(&rec).await.unwrap();
        store.put_meta(&meta).await.unwrap();
        expect.push((at, *rec.key_id()));
    }
    expect.sort();
    let due = |now: u64| {
        let store = Arc::clone(&store);
        async move { store.due_keys(now, None, 100).await.unwrap().unwrap() }
    };
    let before = due(3_999).await;
    for n in [300u32, 301, 302] {
        assert!(
            !before.iter().any(|(_, id)| id == record(n).key_id()),
            "not due before its destruction time"
        );
    }
    let at_5000: Vec<_> = expect
        .iter()
        .filter(|(at, _)| *at <= 5_000)
        .copied()
        .collect();
    assert_eq!(due(5_000).await, at_5000);
    // Paged with a cursor.
    let first = store.due_keys(u64::MAX, None, 1).await.unwrap().unwrap();
    let rest = store
        .due_keys(u64::MAX, first.last().copied(), 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!([first, rest].concat(), expect);
    // Destroyed, its record still stored: due; its record deleted: not.
    let (rec, mut meta) = pending(301, 4_000);
    meta.state = KeyState::Destroyed;
    meta.changed = 4_001;
    store.put_meta(&meta).await.unwrap();
    assert!(due(u64::MAX).await.contains(&(4_001, *rec.key_id())));
    store.delete(rec.key_id()).await.unwrap();
    assert!(!due(u64::MAX).await.iter().any(|(_, id)| id == rec.key_id()));
    // Cancelled: not due.
    let (rec, mut meta) = pending(300, 5_000);
    meta.state = KeyState::Active;
    meta.destroy_at = None;
    store.put_meta(&meta).await.unwrap();
    assert!(!due(u64::MAX).await.iter().any(|(_, id)| id == rec.key_id()));
}

/// Runs the whole storage conformance kit on a backend: one module named
/// `$name`, one `#[test]` per check. `$make` is evaluated in async context
/// for each check and gives `(store, guard)`: the guard keeps alive whatever
/// the store needs (a temporary directory), `()` if nothing. Attributes
/// before `$name` go on every check: a backend that needs a service this
/// machine may not run (a database) marks its checks `#[ignore = "why"]`,
/// and they show as ignored until run with `cargo test -- --ignored`.
///
/// ```
/// # mod demo {
/// keyserver::storage_conformance!(memory, (keyserver::backends::MemoryStorage::new(), ()));
/// keyserver::storage_conformance!(
///     #[ignore = "an example of a check that needs a service"]
///     ignored_memory,
///     (keyserver::backends::MemoryStorage::new(), ())
/// );
/// # }
/// ```
#[macro_export]
macro_rules! storage_conformance {
    ($(#[$attr:meta])* $name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            $(#[$attr])*
            fn put_is_create_only() {
                $crate::run(async {
                    let (store, _guard) = $make;
                    $crate::storage::put_is_create_only(store).await;
                });
            }
            #[test]
            $(#[$attr])*
            fn crud() {
                $crate::run(async {
                    let (store, _guard) = $make;
                    $crate::storage::crud(store).await;
                });
            }
            #[test]
            $(#[$attr])*
            fn concurrent_puts_lose_nothing() {
                $crate::run(async {
                    let (store, _guard) = $make;
                    $crate::storage::concurrent_puts_lose_nothing(store).await;
                });
            }
            #[test]
            $(#[$attr])*
            fn replace_never_revives() {
                $crate::run(async {
                    let (store, _guard) = $make;
                    $crate::storage::replace_never_revives(store).await;
                });
            }
            #[test]
            $(#[$attr])*
            fn new_keys_and_pages() {
                $crate::run(async {
                    let (store, _guard) = $make;
                    $crate::storage::new_keys_and_pages(store).await;
                });
            }
            #[test]
            $(#[$attr])*
            fn owner_quota_and_due_keys() {
                $crate::run(async {
                    let (store, _guard) = $make;
                    $crate::storage::owner_quota_and_due_keys(store).await;
                });
            }
            #[test]
            $(#[$attr])*
            fn lifecycle_metadata() {
                $crate::run(async {
                    let (store, _guard) = $make;
                    $crate::storage::lifecycle_metadata(store).await;
                });
            }
        }
    };
}
