use std::ffi::{c_void, CStr};
use std::ptr;
use std::sync::OnceLock;

use openssl_sys as ffi;

// From OpenSSL's <openssl/core.h>.
const OSSL_PARAM_UTF8_STRING: u32 = 4;
const OSSL_PARAM_OCTET_STRING: u32 = 5;
const OSSL_PARAM_UNMODIFIED: usize = usize::MAX;

/// The HKDF implementation fetched from the default provider.
struct Kdf(*mut ffi::EVP_KDF);

// SAFETY: a fetched EVP_KDF is an immutable, reference-counted method
// object; OpenSSL documents fetched algorithms as shareable between
// threads, and this one is never freed (it lives for the process).
unsafe impl Send for Kdf {}
// SAFETY: as above.
unsafe impl Sync for Kdf {}

static HKDF: OnceLock<Option<Kdf>> = OnceLock::new();

fn hkdf() -> Option<&'static Kdf> {
    HKDF.get_or_init(|| {
        // SAFETY: a NUL-terminated name; NULL library context and
        // properties select the defaults.
        let kdf = unsafe { ffi::EVP_KDF_fetch(ptr::null_mut(), c"HKDF".as_ptr(), ptr::null()) };
        (!kdf.is_null()).then_some(Kdf(kdf))
    })
    .as_ref()
}

/// An `EVP_KDF_CTX`, freed on drop. Freeing it makes the provider wipe
/// the key, salt and info it copied.
struct Ctx(*mut ffi::EVP_KDF_CTX);

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: self.0 came from EVP_KDF_CTX_new, is non-null and is
        // freed exactly once.
        unsafe { ffi::EVP_KDF_CTX_free(self.0) }
    }
}

/// A parameter that OpenSSL only reads during the call.
fn param(key: &'static CStr, data_type: u32, data: &[u8]) -> ffi::OSSL_PARAM {
    ffi::OSSL_PARAM {
        key: key.as_ptr(),
        data_type,
        // The provider copies set-parameters and never writes to them.
        data: data.as_ptr().cast_mut().cast::<c_void>(),
        data_size: data.len(),
        return_size: OSSL_PARAM_UNMODIFIED,
    }
}

fn end() -> ffi::OSSL_PARAM {
    ffi::OSSL_PARAM {
        key: ptr::null(),
        data_type: 0,
        data: ptr::null_mut(),
        data_size: 0,
        return_size: 0,
    }
}

/// Leaves no stale entries on this thread's OpenSSL error queue.
fn clear_errors() {
    // SAFETY: no arguments; clears the calling thread's error queue.
    unsafe { ffi::ERR_clear_error() }
}

/// HKDF-SHA256 (extract and expand) into all of `okm` (non-empty, at most
/// 255 * 32 bytes: checked by the caller).
pub(super) fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8]) -> Result<(), ()> {
    let kdf = hkdf().ok_or(())?;
    // SAFETY: kdf.0 is a valid fetched EVP_KDF.
    let raw = unsafe { ffi::EVP_KDF_CTX_new(kdf.0) };
    if raw.is_null() {
        clear_errors();
        return Err(());
    }
    let ctx = Ctx(raw);
    let params = [
        // OpenSSL reads a UTF-8 parameter as a C string: the name must
        // be NUL-terminated, with the NUL not counted in its size.
        param(c"digest", OSSL_PARAM_UTF8_STRING, c"SHA256".to_bytes()),
        param(c"key", OSSL_PARAM_OCTET_STRING, ikm),
        param(c"salt", OSSL_PARAM_OCTET_STRING, salt),
        param(c"info", OSSL_PARAM_OCTET_STRING, info),
        end(),
    ];
    // SAFETY: ctx.0 is a live context; `params` is terminated by an end
    // marker and every pointer in it (static names, `ikm`, `salt`,
    // `info`) outlives the call; `okm` is writable for okm.len() bytes.
    let rc = unsafe { ffi::EVP_KDF_derive(ctx.0, okm.as_mut_ptr(), okm.len(), params.as_ptr()) };
    if rc == 1 {
        Ok(())
    } else {
        clear_errors();
        okm.fill(0);
        Err(())
    }
}
