//! keyserver's master key in an HSM: a [`Seal`] whose AES-256 keys never
//! leave a PKCS#11 token (a hardware HSM, a cloud HSM's PKCS#11 library,
//! or SoftHSM2 for tests). With it (`keyserver serve --seal pkcs11:…`),
//! every stored record is sealed once more under the token's key, so a copy
//! of the store and a stolen KEK still open nothing without the token; and
//! destroying the key on the token destroys the store (crypto-shredding).
//!
//! The token does the AES-256-GCM (`CKM_AES_GCM`, 128-bit tags); the nonce
//! is 96 random bits from the operating system's generator, fresh for each
//! record, so one master key may seal up to 2^32 records (NIST SP 800-38D,
//! 8.3) before `keyserver reseal` moves the store to a new one. The key
//! must be sensitive and not extractable (`keyserver seal new-key` makes
//! such a key); any other is refused.
//!
//! A record names its master key by an 8-byte reference: SHA-256 of a
//! label, the key's `CKA_LABEL` and its `CKA_ID` (random, set by `keyserver
//! seal new-key`), cut to 8 bytes ([`key_ref`]). So the seal opens records
//! of every AES key on its token, a store being moved from one key to
//! another reads throughout, a copy of the key in a second HSM (cloned, so
//! with the same label and id) opens the same records, and a new key of an
//! old label is another key. Two keys of one label and id on a token are
//! refused as ambiguous.
//!
//! If the token goes away (removed, the module's daemon restarted), calls
//! fail with a storage error (code 5) and [`Seal::check`] (so `/readyz`)
//! says why; the seal initialises the module again (at most once a second,
//! and only when no call is inside it) and logs in again by itself when
//! the token is back. A wrong PIN is never tried twice: the seal stops
//! logging in until it is opened again, so it cannot lock the token.
//!
//! At open, the key must be AES-256, private, sensitive, never
//! extractable and generated inside the token (`CKA_LOCAL`), and a seal
//! and open of a test block must give it back (a token that chooses its
//! own GCM nonces writes it where the seal reads it from).
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use keyserver::backends::MemoryStorage;
//! use keyserver::seal::SealedStorage;
//! use keyserver_pkcs11::Pkcs11Seal;
//!
//! // The PIN comes from a file only its owner reads (never the URI).
//! let seal = Pkcs11Seal::open(
//!     &"pkcs11:token=keyserver;object=master-1\
//!       ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/keyserver/pin"
//!         .parse()?,
//! )?;
//! let store = SealedStorage::new(MemoryStorage::new(), Arc::new(seal));
//! # Ok::<(), keyserver::Error>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod uri;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyserver_core::seal::{missing_key, Seal, SealKeyRef};
use keyserver_core::{Error, Result};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use uri::{Pkcs11Uri, MODULE_ENV, PIN_ENV};

/// The reference a record gives of the key with `CKA_LABEL` `label` and
/// `CKA_ID` `id` (empty if it has none).
pub fn key_ref(label: &str, id: &[u8]) -> SealKeyRef {
    let mut hash = Sha256::new();
    hash.update(b"keyserver seal key v2\0");
    hash.update((label.len() as u64).to_be_bytes());
    hash.update(label.as_bytes());
    hash.update(id);
    let digest = hash.finalize();
    let mut reference = [0u8; 8];
    reference.copy_from_slice(&digest[..8]);
    SealKeyRef(reference)
}

/// A storage error of the seal (code 5), naming the token.
fn seal_error(uri: &Pkcs11Uri, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Storage {
        backend: "seal".into(),
        message: format!("token {:?}: {what}: {e}", uri.token),
        source: None,
    }
}

/// Whether a PKCS#11 failure means the session or the token is gone (so a
/// new session, after logging in again, may succeed).
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// One loaded module: its context, and the gate every call into it passes.
/// Calls hold the gate shared; `C_Finalize` and `C_Initialize` (a reset)
/// hold it alone, so no call is ever inside the module while it is reset.
/// The generation counts resets: sessions of an older generation are
/// stale (their handles may now name another session) and are forgotten,
/// never closed.
struct Gate {
    generation: RwLock<u64>,
    last_reset: Mutex<Option<Instant>>,
}

/// The modules loaded in this process, each initialised once: a PKCS#11
/// module is one library state per process, and `C_Initialize` (like
/// `C_Finalize`) must not race itself.
type Modules = HashMap<std::path::PathBuf, (Pkcs11, Arc<Gate>)>;
static MODULES: Mutex<Option<Modules>> = Mutex::new(None);

/// The context and gate of the module of `uri`, loaded and initialised
/// once per process.
fn context(uri: &Pkcs11Uri) -> Result<(Pkcs11, Arc<Gate>)> {
    let module = uri.module()?;
    let mut modules = MODULES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let loaded = modules.get_or_insert_with(HashMap::new);
    if let Some((ctx, gate)) = loaded.get(&module) {
        return Ok((ctx.clone(), Arc::clone(gate)));
    }
    let ctx = Pkcs11::new(&module).map_err(|e| {
        seal_error(
            uri,
            &format!("cannot load the PKCS#11 module {}", module.display()),
            e,
        )
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
            let gate = Arc::new(Gate {
                generation: RwLock::new(0),
                last_reset: Mutex::new(None),
            });
            loaded.insert(module, (ctx.clone(), Arc::clone(&gate)));
            Ok((ctx, gate))
        }
        Err(e) => Err(seal_error(uri, "cannot initialise the module", e)),
    }
}

/// The slot holding the token `uri` names.
fn find_slot(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| seal_error(uri, "cannot list the slots", e))?;
    let mut seen = Vec::new();
    let mut found = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let label = info.label().trim_end().to_string();
        let serial_ok = uri
            .serial
            .as_deref()
            .is_none_or(|s| info.serial_number().trim_end() == s);
        let maker_ok = uri
            .manufacturer
            .as_deref()
            .is_none_or(|m| info.manufacturer_id().trim_end() == m);
        if label == uri.token && serial_ok && maker_ok {
            found.push(slot);
        }
        seen.push(label);
    }
    match found[..] {
        [slot] => Ok(slot),
        [] => Err(seal_error(
            uri,
            "not found",
            format!("the tokens present are {seen:?}"),
        )),
        _ => Err(seal_error(
            uri,
            "is ambiguous",
            "several tokens have this label: add serial= to the URI",
        )),
    }
}

/// Why a login failed: for good (the PIN), or perhaps for now.
enum LoginError {
    Pin(Error),
    Other(Error),
}

impl From<LoginError> for Error {
    fn from(e: LoginError) -> Error {
        match e {
            LoginError::Pin(e) | LoginError::Other(e) => e,
        }
    }
}

/// A new session on `slot`, logged in as the user (the login is the
/// application's: later sessions share it).
fn login(
    ctx: &Pkcs11,
    slot: Slot,
    uri: &Pkcs11Uri,
    pin: &str,
    rw: bool,
) -> std::result::Result<Session, LoginError> {
    let session = if rw {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .map_err(|e| LoginError::Other(seal_error(uri, "cannot open a session", e)))?;
    match session.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(LoginError::Pin(seal_error(
            uri,
            "cannot log in",
            "the PIN is wrong (it is not tried again until the seal is opened again)",
        ))),
        Err(CkError::Pkcs11(RvError::PinLocked | RvError::PinExpired, _)) => Err(LoginError::Pin(
            seal_error(uri, "cannot log in", "the user PIN is locked or expired"),
        )),
        Err(e) => Err(LoginError::Other(seal_error(uri, "cannot log in", e))),
    }
}

/// The AES secret keys of a token: by reference, with the labels of each
/// (several keys of one reference make it ambiguous).
struct Keys {
    by_ref: HashMap<SealKeyRef, Vec<ObjectHandle>>,
}

/// Lists the token's AES secret keys.
fn list_keys(session: &Session, uri: &Pkcs11Uri) -> Result<Keys> {
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
        ])
        .map_err(|e| seal_error(uri, "cannot list its keys", e))?;
    let mut by_ref: HashMap<SealKeyRef, Vec<ObjectHandle>> = HashMap::new();
    for handle in handles {
        let attrs = session
            .get_attributes(handle, &[AttributeType::Label, AttributeType::Id])
            .map_err(|e| seal_error(uri, "cannot read a key's label", e))?;
        let (mut label, mut id) = (None, Vec::new());
        for attr in attrs {
            match attr {
                Attribute::Label(l) => label = Some(String::from_utf8_lossy(&l).into_owned()),
                Attribute::Id(i) => id = i,
                _ => {}
            }
        }
        if let Some(label) = label {
            by_ref.entry(key_ref(&label, &id)).or_default().push(handle);
        }
    }
    Ok(Keys { by_ref })
}

/// The one key `uri` names (its label, and its id if given): its handle
/// and reference.
fn find_key(session: &Session, uri: &Pkcs11Uri) -> Result<(ObjectHandle, SealKeyRef)> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(uri.object.as_bytes().to_vec()),
    ];
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let handles = session
        .find_objects(&template)
        .map_err(|e| seal_error(uri, "cannot look its keys up", e))?;
    let handle = match handles[..] {
        [handle] => handle,
        [] => {
            return Err(seal_error(
                uri,
                &format!("no AES key labelled {:?}", uri.object),
                "make one with `keyserver seal new-key`",
            ))
        }
        _ => {
            return Err(seal_error(
                uri,
                &format!("several AES keys are labelled {:?}", uri.object),
                "name one with id= in the URI",
            ))
        }
    };
    let id = session
        .get_attributes(handle, &[AttributeType::Id])
        .map_err(|e| seal_error(uri, "cannot read the key's id", e))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Id(id) => Some(id),
            _ => None,
        })
        .unwrap_or_default();
    Ok((handle, key_ref(&uri.object, &id)))
}

/// Refuses a master key that is not AES-256, or is not private, or could
/// ever have left the token or been known outside it.
fn check_key(session: &Session, handle: ObjectHandle, uri: &Pkcs11Uri) -> Result<()> {
    let wanted = [
        AttributeType::ValueLen,
        AttributeType::Private,
        AttributeType::Sensitive,
        AttributeType::AlwaysSensitive,
        AttributeType::Extractable,
        AttributeType::NeverExtractable,
        AttributeType::Local,
    ];
    let attrs = session
        .get_attributes(handle, &wanted)
        .map_err(|e| seal_error(uri, "cannot read the key's attributes", e))?;
    let refuse = |why: &str| {
        seal_error(
            uri,
            &format!("key {:?} is refused", uri.object),
            format!("{why}; make one with `keyserver seal new-key`"),
        )
    };
    if attrs.len() != wanted.len() {
        return Err(refuse("the token does not report all of its attributes"));
    }
    for attr in attrs {
        let bad = match attr {
            Attribute::ValueLen(len) if usize::from(len) != 32 => "it is not a 256-bit AES key",
            Attribute::Private(false) => "it is usable without logging in (CKA_PRIVATE)",
            Attribute::Sensitive(false) => "it is not sensitive (CKA_SENSITIVE)",
            Attribute::AlwaysSensitive(false) => {
                "it was not always sensitive (CKA_ALWAYS_SENSITIVE)"
            }
            Attribute::Extractable(true) => "it can leave the token (CKA_EXTRACTABLE)",
            Attribute::NeverExtractable(false) => {
                "it could once leave the token (CKA_NEVER_EXTRACTABLE)"
            }
            Attribute::Local(false) => "it was not generated in the token (CKA_LOCAL)",
            _ => continue,
        };
        return Err(refuse(bad));
    }
    Ok(())
}

/// A PKCS#11 token holding the master keys. See the crate documentation.
pub struct Pkcs11Seal {
    uri: Pkcs11Uri,
    ctx: Pkcs11,
    gate: Arc<Gate>,
    /// Kept to log in again when the token comes back; wiped on drop.
    pin: Zeroizing<String>,
    /// Set when the token refused the PIN: never tried again.
    pin_refused: std::sync::atomic::AtomicBool,
    current: SealKeyRef,
    state: Mutex<State>,
}

/// The sessions of one generation of the module (reused, one call at a
/// time each), the slot, and the keys by reference.
struct State {
    generation: u64,
    slot: Option<Slot>,
    sessions: Vec<Session>,
    keys: Option<Keys>,
}

impl State {
    /// Forgets what belongs to an older generation: its sessions are
    /// leaked, not closed (their handles may name new sessions now).
    fn renew(&mut self, generation: u64) {
        if self.generation != generation {
            for session in self.sessions.drain(..) {
                std::mem::forget(session);
            }
            self.keys = None;
            self.slot = None;
            self.generation = generation;
        }
    }
}

impl std::fmt::Debug for Pkcs11Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Seal")
            .field("uri", &self.uri.to_string())
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

/// The least time between two resets of a module.
const RESET_INTERVAL: Duration = Duration::from_secs(1);

impl Pkcs11Seal {
    /// Opens the token `uri` names, logs in with its PIN, finds its master
    /// key, checks it, and seals and opens a test block with it.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for a URI without a module or PIN source;
    /// [`Error::Storage`] (code 5), saying why, if the module does not
    /// load, the token is not there, the PIN is wrong, or the key is
    /// missing, ambiguous, not AES-256, or can leave the token.
    pub fn open(uri: &Pkcs11Uri) -> Result<Self> {
        let pin = uri.pin()?;
        let (ctx, gate) = context(uri)?;
        let generation = *gate
            .generation
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (session, slot, current) = {
            let _shared = gate
                .generation
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let slot = find_slot(&ctx, uri)?;
            let session = login(&ctx, slot, uri, &pin, false)?;
            let (handle, current) = find_key(&session, uri)?;
            check_key(&session, handle, uri)?;
            (session, slot, current)
        };
        let seal = Pkcs11Seal {
            uri: uri.clone(),
            ctx,
            gate,
            pin,
            pin_refused: std::sync::atomic::AtomicBool::new(false),
            current,
            state: Mutex::new(State {
                generation,
                slot: Some(slot),
                sessions: vec![session],
                keys: None,
            }),
        };
        seal.self_test()?;
        Ok(seal)
    }

    /// Seals and opens a test block: the key works, and the nonce the
    /// record keeps is the one the token used.
    fn self_test(&self) -> Result<()> {
        let aad = b"keyserver seal self-test";
        let block = [0x5a_u8; 48];
        let sealed = self.encrypt(self.current, aad, &block)?;
        let opened = self.decrypt(self.current, aad, &sealed);
        match opened {
            Ok(plain) if plain[..] == block[..] => Ok(()),
            _ => Err(seal_error(
                &self.uri,
                "failed its self-test",
                "a block sealed with the master key does not open again",
            )),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A session of `generation` from the pool, or a new one (finding the
    /// token and logging in again if it was lost). The caller holds the
    /// gate shared.
    fn session(&self, generation: u64) -> std::result::Result<Session, LoginError> {
        let mut state = self.state();
        state.renew(generation);
        if let Some(session) = state.sessions.pop() {
            return Ok(session);
        }
        if self.pin_refused.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(LoginError::Pin(seal_error(
                &self.uri,
                "cannot log in",
                "the PIN was refused; open the seal again (restart) with the right PIN",
            )));
        }
        let slot = match state.slot {
            Some(slot) => slot,
            None => {
                let slot = find_slot(&self.ctx, &self.uri).map_err(LoginError::Other)?;
                state.slot = Some(slot);
                slot
            }
        };
        let session = match login(&self.ctx, slot, &self.uri, &self.pin, false) {
            Ok(session) => session,
            Err(LoginError::Pin(e)) => {
                self.pin_refused
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(LoginError::Pin(e));
            }
            Err(other) => return Err(other),
        };
        if state.keys.is_none() {
            // After a reset: the master key is found and checked again.
            let (handle, current) = find_key(&session, &self.uri).map_err(LoginError::Other)?;
            if current != self.current {
                return Err(LoginError::Other(seal_error(
                    &self.uri,
                    &format!("key {:?} has changed", self.uri.object),
                    "it is not the key the seal was opened with",
                )));
            }
            check_key(&session, handle, &self.uri).map_err(LoginError::Other)?;
            state.keys = Some(list_keys(&session, &self.uri).map_err(LoginError::Other)?);
        }
        Ok(session)
    }

    /// The handle of `key`, looking the token's keys up again once if it
    /// is not known (a key made since).
    fn handle(&self, key: SealKeyRef, session: &Session) -> Result<ObjectHandle> {
        let lookup = |keys: &Keys| -> Option<Result<ObjectHandle>> {
            match keys.by_ref.get(&key).map(Vec::as_slice) {
                Some([handle]) => Some(Ok(*handle)),
                Some([]) | None => None,
                Some(_) => Some(Err(seal_error(
                    &self.uri,
                    &format!("master key {key} is ambiguous"),
                    "several keys of the token have its label and id",
                ))),
            }
        };
        if let Some(found) = self.state().keys.as_ref().and_then(&lookup) {
            return found;
        }
        let keys = list_keys(session, &self.uri)?;
        let found = lookup(&keys);
        self.state().keys = Some(keys);
        found.unwrap_or_else(|| Err(missing_key(key, &format!("token {:?}", self.uri.token))))
    }

    /// Runs `op` with a session and `key`'s handle, inside the module's
    /// gate; if the session or the token was lost, resets the module and
    /// tries once more.
    fn with_key<T>(
        &self,
        key: SealKeyRef,
        what: &str,
        op: impl Fn(&Session, ObjectHandle) -> std::result::Result<T, CkError>,
    ) -> Result<std::result::Result<T, CkError>> {
        for attempt in 0..2 {
            let shared = self
                .gate
                .generation
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let generation = *shared;
            let session = match self.session(generation) {
                Ok(session) => session,
                Err(LoginError::Pin(e)) => return Err(e),
                // The token is not found, or will not log us in: after a
                // reset the module looks again.
                Err(LoginError::Other(e)) if attempt == 0 => {
                    drop(shared);
                    tracing::warn!(token = %self.uri.token, error = %e, "PKCS#11 token not usable; initialising the module again");
                    self.reset(generation);
                    continue;
                }
                Err(LoginError::Other(e)) => return Err(e),
            };
            let handle = match self.handle(key, &session) {
                Ok(handle) => handle,
                Err(e) => {
                    self.state().sessions.push(session);
                    return Err(e);
                }
            };
            match op(&session, handle) {
                Err(e) if session_lost(&e) => {
                    // Closed while no reset can run (the gate is held).
                    drop(session);
                    drop(shared);
                    if attempt == 1 {
                        return Err(seal_error(&self.uri, what, e));
                    }
                    tracing::warn!(token = %self.uri.token, error = %e, "PKCS#11 session lost; initialising the module again");
                    self.reset(generation);
                }
                result => {
                    self.state().sessions.push(session);
                    return Ok(result);
                }
            }
        }
        Err(seal_error(&self.uri, what, "the token is not usable"))
    }

    /// Finalises and initialises the module again (a token that was
    /// removed is only seen again by some modules, SoftHSM2 among them,
    /// after `C_Finalize` and `C_Initialize`): with the gate held alone,
    /// so no call is inside the module, and only if no one reset it since
    /// `seen` and not within the last [`RESET_INTERVAL`].
    fn reset(&self, seen: u64) {
        let mut generation = self
            .gate
            .generation
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *generation != seen {
            return;
        }
        let mut last = self
            .gate
            .last_reset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < RESET_INTERVAL) {
            return;
        }
        let _ = self.ctx.clone().finalize();
        let _ = self
            .ctx
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        *generation += 1;
        *last = Some(Instant::now());
    }

    /// The URI this seal was opened with (no PIN is part of it).
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }
}

impl Seal for Pkcs11Seal {
    fn describe(&self) -> String {
        format!(
            "PKCS#11 token {:?}, key {:?}",
            self.uri.token, self.uri.object
        )
    }

    fn current_key(&self) -> SealKeyRef {
        self.current
    }

    fn encrypt(&self, key: SealKeyRef, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|_| Error::Crypto {
            suite: "os",
            operation: "random nonce",
        })?;
        let sealed = self.with_key(key, "cannot seal a record", |session, handle| {
            let mut iv = nonce;
            let sealed = {
                let params = GcmParams::new(&mut iv, aad, 128.into())?;
                session.encrypt(&Mechanism::AesGcm(params), handle, plaintext)?
            };
            // A token that makes its own nonces writes the one it used
            // into the parameters: that is the one to keep.
            Ok((iv, sealed))
        })?;
        let (iv, sealed) = sealed.map_err(|e| seal_error(&self.uri, "cannot seal a record", e))?;
        if sealed.len() != plaintext.len() + 16 {
            return Err(seal_error(
                &self.uri,
                "cannot seal a record",
                "the token's ciphertext has the wrong length",
            ));
        }
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn decrypt(&self, key: SealKeyRef, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < 12 + 16 {
            return Err(Error::DecryptionFailed);
        }
        let (nonce, body) = sealed.split_at(12);
        let opened = self.with_key(key, "cannot unseal a record", |session, handle| {
            let mut iv = [0u8; 12];
            iv.copy_from_slice(nonce);
            let params = GcmParams::new(&mut iv, aad, 128.into())?;
            session.decrypt(&Mechanism::AesGcm(params), handle, body)
        })?;
        match opened {
            Ok(plain) => Ok(Zeroizing::new(plain)),
            // The ciphertext or its associated data were changed.
            Err(CkError::Pkcs11(
                RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                _,
            )) => Err(Error::DecryptionFailed),
            // Some tokens (SoftHSM2 among them) report a GCM tag that does
            // not match as a general failure: it is the record's fault if
            // the token is otherwise well, the token's if it is not.
            Err(CkError::Pkcs11(RvError::GeneralError | RvError::FunctionFailed, _)) => {
                match self.check() {
                    Ok(()) => Err(Error::DecryptionFailed),
                    Err(e) => Err(e),
                }
            }
            // Anything else is the token's failure, not the record's.
            Err(e) => Err(seal_error(&self.uri, "cannot unseal a record", e)),
        }
    }

    fn check(&self) -> Result<()> {
        let checked = self.with_key(self.current, "is not usable", |session, handle| {
            session.get_session_info()?;
            session.get_attributes(handle, &[AttributeType::KeyType])
        })?;
        checked
            .map(drop)
            .map_err(|e| seal_error(&self.uri, "is not usable", e))
    }
}

/// A logged-in read-write session on the token `uri` names, for making and
/// destroying keys (inside the module's gate).
fn admin<T>(uri: &Pkcs11Uri, f: impl FnOnce(&Session) -> Result<T>) -> Result<T> {
    let pin = uri.pin()?;
    let (ctx, gate) = context(uri)?;
    let _shared = gate
        .generation
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let slot = find_slot(&ctx, uri)?;
    let session = login(&ctx, slot, uri, &pin, true)?;
    f(&session)
}

/// Makes a new master key on the token `uri` names, labelled as its
/// `object`, with a random 16-byte `CKA_ID` (or the URI's `id=`): AES-256,
/// generated inside the token, kept on it, private, sensitive and never
/// extractable. Returns its reference.
///
/// # Errors
/// As [`Pkcs11Seal::open`]; also if a key of that label already exists.
pub fn create_key(uri: &Pkcs11Uri) -> Result<SealKeyRef> {
    admin(uri, |session| {
        let existing = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(uri.object.as_bytes().to_vec()),
            ])
            .map_err(|e| seal_error(uri, "cannot look its keys up", e))?;
        if !existing.is_empty() {
            return Err(seal_error(
                uri,
                &format!("a key labelled {:?} exists already", uri.object),
                "choose another label",
            ));
        }
        let id = match &uri.id {
            Some(id) => id.clone(),
            None => {
                let mut id = vec![0u8; 16];
                getrandom::fill(&mut id).map_err(|_| Error::Crypto {
                    suite: "os",
                    operation: "random key id",
                })?;
                id
            }
        };
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Wrap(false),
                    Attribute::Unwrap(false),
                    Attribute::Label(uri.object.as_bytes().to_vec()),
                    Attribute::Id(id.clone()),
                ],
            )
            .map_err(|e| seal_error(uri, "cannot generate the key", e))?;
        Ok(key_ref(&uri.object, &id))
    })
}

/// Destroys the key `uri` names on its token: every record sealed under
/// it can never be read again (crypto-shredding).
///
/// # Errors
/// As [`Pkcs11Seal::open`]; also if there is no such key, or several.
pub fn destroy_key(uri: &Pkcs11Uri) -> Result<SealKeyRef> {
    admin(uri, |session| {
        let (handle, reference) = find_key(session, uri)?;
        session
            .destroy_object(handle)
            .map_err(|e| seal_error(uri, "cannot destroy the key", e))?;
        Ok(reference)
    })
}
