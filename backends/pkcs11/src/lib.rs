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
//! label, the token's label and the key's label, cut to 8 bytes. So the
//! seal opens records of every AES key on its token by label, and a store
//! being moved from one key to another reads throughout.
//!
//! If the token goes away (removed, the module's daemon restarted), calls
//! fail with a storage error (code 5) and [`Seal::check`] (so `/readyz`)
//! says why; the seal opens a new session and logs in again by itself
//! when the token is back.
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
use std::sync::Mutex;

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

/// The reference a record gives of the key labelled `key` on the token
/// labelled `token`.
pub fn key_ref(token: &str, key: &str) -> SealKeyRef {
    let mut hash = Sha256::new();
    hash.update(b"keyserver seal key v1\0");
    hash.update(token.as_bytes());
    hash.update([0]);
    hash.update(key.as_bytes());
    let digest = hash.finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    SealKeyRef(id)
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

/// A PKCS#11 token holding the master keys. See the crate documentation.
pub struct Pkcs11Seal {
    uri: Pkcs11Uri,
    ctx: Pkcs11,
    /// Kept to log in again when the token comes back; wiped on drop.
    pin: Zeroizing<String>,
    current: SealKeyRef,
    state: Mutex<State>,
}

/// The slot, the open sessions (reused, one per call at a time), and the
/// handles of the AES keys by reference.
struct State {
    slot: Option<Slot>,
    sessions: Vec<Session>,
    keys: HashMap<SealKeyRef, ObjectHandle>,
}

impl std::fmt::Debug for Pkcs11Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Seal")
            .field("uri", &self.uri.to_string())
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

/// The modules loaded in this process, each initialised once: a PKCS#11
/// module is one library state per process, and `C_Initialize` (like
/// `C_Finalize`) must not race itself, so every seal and key operation of
/// the process shares one context per module path, made under this lock.
static MODULES: Mutex<Option<HashMap<std::path::PathBuf, Pkcs11>>> = Mutex::new(None);

fn modules() -> std::sync::MutexGuard<'static, Option<HashMap<std::path::PathBuf, Pkcs11>>> {
    MODULES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The context of the module of `uri`, loaded and initialised once per
/// process.
fn context(uri: &Pkcs11Uri) -> Result<Pkcs11> {
    let module = uri.module()?;
    let mut modules = modules();
    let loaded = modules.get_or_insert_with(HashMap::new);
    if let Some(ctx) = loaded.get(&module) {
        return Ok(ctx.clone());
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
            loaded.insert(module, ctx.clone());
            Ok(ctx)
        }
        Err(e) => Err(seal_error(uri, "cannot initialise the module", e)),
    }
}

/// Finalises and initialises `ctx`'s module again, under the modules'
/// lock (every session of the process on that module is closed by it).
fn reinitialise(ctx: &Pkcs11) {
    let _modules = modules();
    let _ = ctx.clone().finalize();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
}

/// The slot holding the token `uri` names.
fn find_slot(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| seal_error(uri, "cannot list the slots", e))?;
    let mut seen = Vec::new();
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
            return Ok(slot);
        }
        seen.push(label);
    }
    Err(seal_error(
        uri,
        "not found",
        format!("the tokens present are {seen:?}"),
    ))
}

/// A new session on `slot`, logged in as the user (the login is the
/// application's: later sessions share it).
fn login(ctx: &Pkcs11, slot: Slot, uri: &Pkcs11Uri, pin: &str, rw: bool) -> Result<Session> {
    let session = if rw {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .map_err(|e| seal_error(uri, "cannot open a session", e))?;
    match session.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            Err(seal_error(uri, "cannot log in", "the PIN is wrong"))
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(seal_error(
            uri,
            "cannot log in",
            "the user PIN is locked (too many wrong PINs)",
        )),
        Err(e) => Err(seal_error(uri, "cannot log in", e)),
    }
}

/// The AES secret keys on the token, by reference.
fn list_keys(session: &Session, uri: &Pkcs11Uri) -> Result<HashMap<SealKeyRef, ObjectHandle>> {
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
        ])
        .map_err(|e| seal_error(uri, "cannot list its keys", e))?;
    let mut keys = HashMap::new();
    for handle in handles {
        let attrs = session
            .get_attributes(handle, &[AttributeType::Label])
            .map_err(|e| seal_error(uri, "cannot read a key's label", e))?;
        for attr in attrs {
            if let Attribute::Label(label) = attr {
                let label = String::from_utf8_lossy(&label).into_owned();
                keys.insert(key_ref(&uri.token, &label), handle);
            }
        }
    }
    Ok(keys)
}

impl Pkcs11Seal {
    /// Opens the token `uri` names, logs in with its PIN, and finds its
    /// master key.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for a URI without a module or PIN source;
    /// [`Error::Storage`] (code 5), saying why, if the module does not
    /// load, the token is not there, the PIN is wrong, or the key is
    /// missing, not AES-256, or can leave the token.
    pub fn open(uri: &Pkcs11Uri) -> Result<Self> {
        let pin = uri.pin()?;
        let ctx = context(uri)?;
        let slot = find_slot(&ctx, uri)?;
        let session = login(&ctx, slot, uri, &pin, false)?;
        let keys = list_keys(&session, uri)?;
        let current = key_ref(&uri.token, &uri.object);
        let handle = *keys.get(&current).ok_or_else(|| {
            seal_error(
                uri,
                &format!("no AES key labelled {:?}", uri.object),
                "make one with `keyserver seal new-key`",
            )
        })?;
        check_key(&session, handle, uri)?;
        Ok(Pkcs11Seal {
            uri: uri.clone(),
            ctx,
            pin,
            current,
            state: Mutex::new(State {
                slot: Some(slot),
                sessions: vec![session],
                keys,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A session from the pool, or a new one (finding the token and
    /// logging in again if it was lost).
    fn session(&self) -> Result<Session> {
        let mut state = self.state();
        if let Some(session) = state.sessions.pop() {
            return Ok(session);
        }
        let slot = match state.slot {
            Some(slot) => slot,
            None => {
                let slot = find_slot(&self.ctx, &self.uri)?;
                state.slot = Some(slot);
                slot
            }
        };
        let session = login(&self.ctx, slot, &self.uri, &self.pin, false)?;
        if state.keys.is_empty() {
            state.keys = list_keys(&session, &self.uri)?;
        }
        Ok(session)
    }

    /// The handle of `key`, looking the token's keys up again once if it
    /// is not known (a key made since).
    fn handle(&self, key: SealKeyRef, session: &Session) -> Result<ObjectHandle> {
        if let Some(handle) = self.state().keys.get(&key) {
            return Ok(*handle);
        }
        let keys = list_keys(session, &self.uri)?;
        let found = keys.get(&key).copied();
        self.state().keys = keys;
        found.ok_or_else(|| missing_key(key, &format!("token {:?}", self.uri.token)))
    }

    /// Runs `op` with a session and `key`'s handle; if the session or the
    /// token was lost, starts over ([`Pkcs11Seal::reset`]) and tries once
    /// more.
    fn with_key<T>(
        &self,
        key: SealKeyRef,
        what: &str,
        op: impl Fn(&Session, ObjectHandle) -> std::result::Result<T, CkError>,
    ) -> Result<std::result::Result<T, CkError>> {
        for attempt in 0..2 {
            let session = match self.session() {
                Ok(session) => session,
                // The token is not found, or will not log us in: after a
                // reset the module looks again.
                Err(e) if attempt == 0 => {
                    tracing::warn!(token = %self.uri.token, error = %e, "PKCS#11 token not usable; initialising the module again");
                    self.reset();
                    continue;
                }
                Err(e) => return Err(e),
            };
            let handle = self.handle(key, &session)?;
            match op(&session, handle) {
                Err(e) if session_lost(&e) => {
                    drop(session);
                    self.reset();
                    if attempt == 1 {
                        return Err(seal_error(&self.uri, what, e));
                    }
                    tracing::warn!(token = %self.uri.token, error = %e, "PKCS#11 session lost; logging in again");
                }
                result => {
                    self.state().sessions.push(session);
                    return Ok(result);
                }
            }
        }
        Err(seal_error(&self.uri, what, "the token is not usable"))
    }

    /// Forgets every session and handle, and initialises the module again
    /// (a token that was removed is only seen again by some modules,
    /// SoftHSM2 among them, after `C_Finalize` and `C_Initialize`).
    /// Serialised: one reset at a time.
    fn reset(&self) {
        let mut state = self.state();
        state.sessions.clear();
        state.keys.clear();
        state.slot = None;
        reinitialise(&self.ctx);
    }

    /// The URI this seal was opened with (no PIN is part of it).
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }
}

/// Refuses a master key that is not AES-256, or can leave the token.
fn check_key(session: &Session, handle: ObjectHandle, uri: &Pkcs11Uri) -> Result<()> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::ValueLen,
                AttributeType::Sensitive,
                AttributeType::Extractable,
            ],
        )
        .map_err(|e| seal_error(uri, "cannot read the key's attributes", e))?;
    for attr in attrs {
        let bad = match attr {
            Attribute::ValueLen(len) if usize::from(len) != 32 => "it is not a 256-bit AES key",
            Attribute::Sensitive(false) => "it is not sensitive (CKA_SENSITIVE)",
            Attribute::Extractable(true) => "it can leave the token (CKA_EXTRACTABLE)",
            _ => continue,
        };
        return Err(seal_error(
            uri,
            &format!("key {:?} is refused", uri.object),
            format!("{bad}; make one with `keyserver seal new-key`"),
        ));
    }
    Ok(())
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
            let params = GcmParams::new(&mut iv, aad, 128.into())?;
            session.encrypt(&Mechanism::AesGcm(params), handle, plaintext)
        })?;
        let sealed = sealed.map_err(|e| seal_error(&self.uri, "cannot seal a record", e))?;
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
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
            // The ciphertext or its associated data were changed: the
            // token says so in one of these ways (SoftHSM2: the first).
            Err(CkError::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::FunctionFailed
                | RvError::GeneralError,
                _,
            )) => Err(Error::DecryptionFailed),
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

/// Makes a new master key on the token `uri` names, labelled as its
/// `object`: AES-256, generated inside the token, kept on it, sensitive
/// and never extractable. Returns its reference.
///
/// # Errors
/// As [`Pkcs11Seal::open`]; also if a key of that label already exists.
pub fn create_key(uri: &Pkcs11Uri) -> Result<SealKeyRef> {
    let pin = uri.pin()?;
    let ctx = context(uri)?;
    let slot = find_slot(&ctx, uri)?;
    let session = login(&ctx, slot, uri, &pin, true)?;
    let reference = key_ref(&uri.token, &uri.object);
    if list_keys(&session, uri)?.contains_key(&reference) {
        return Err(seal_error(
            uri,
            &format!("a key labelled {:?} exists already", uri.object),
            "choose another label",
        ));
    }
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
            ],
        )
        .map_err(|e| seal_error(uri, "cannot generate the key", e))?;
    Ok(reference)
}

/// Destroys the key `uri` names on its token: every record sealed under
/// it can never be read again (crypto-shredding).
///
/// # Errors
/// As [`Pkcs11Seal::open`]; also if there is no such key.
pub fn destroy_key(uri: &Pkcs11Uri) -> Result<SealKeyRef> {
    let pin = uri.pin()?;
    let ctx = context(uri)?;
    let slot = find_slot(&ctx, uri)?;
    let session = login(&ctx, slot, uri, &pin, true)?;
    let reference = key_ref(&uri.token, &uri.object);
    let handle = *list_keys(&session, uri)?
        .get(&reference)
        .ok_or_else(|| missing_key(reference, &format!("token {:?}", uri.token)))?;
    session
        .destroy_object(handle)
        .map_err(|e| seal_error(uri, "cannot destroy the key", e))?;
    Ok(reference)
}
