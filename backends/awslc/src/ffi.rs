#[cfg(feature = "fips")]
use aws_lc_fips_sys as sys;
#[cfg(not(feature = "fips"))]
use aws_lc_sys as sys;

use std::os::raw::{c_int, c_void};
use std::ptr;

use zeroize::Zeroizing;

use super::{crypto, invalid};
use keyserver_core::plugin::{unsupported, HkdfHash, MlKem, MAX_RSA_BITS, MIN_RSA_BITS};
use keyserver_core::{Error, Result};

/// Runs the failure path: AWS-LC's thread-local error queue is left
/// empty, so a later call never reports a stale error.
fn fail<T>(error: Error) -> Result<T> {
    // SAFETY: no arguments; it only empties this thread's error queue.
    unsafe { sys::ERR_clear_error() };
    Err(error)
}

struct Pkey(*mut sys::EVP_PKEY);
impl Drop for Pkey {
    fn drop(&mut self) {
        // SAFETY: the pointer came from AWS-LC, is non-null (checked at
        // construction) and owned by this guard alone. EVP_PKEY_free
        // cleanses the key's private fields.
        unsafe { sys::EVP_PKEY_free(self.0) }
    }
}

struct PkeyCtx(*mut sys::EVP_PKEY_CTX);
impl Drop for PkeyCtx {
    fn drop(&mut self) {
        // SAFETY: as for Pkey.
        unsafe { sys::EVP_PKEY_CTX_free(self.0) }
    }
}

impl PkeyCtx {
    fn for_key(key: &Pkey) -> Result<Self> {
        // SAFETY: key.0 is a valid EVP_PKEY; the context takes its own
        // reference to it.
        let ctx = unsafe { sys::EVP_PKEY_CTX_new(key.0, ptr::null_mut()) };
        if ctx.is_null() {
            return fail(crypto("EVP_PKEY_CTX_new"));
        }
        Ok(PkeyCtx(ctx))
    }

    fn for_id(id: c_int) -> Result<Self> {
        // SAFETY: a plain constructor; a null result is checked.
        let ctx = unsafe { sys::EVP_PKEY_CTX_new_id(id, ptr::null_mut()) };
        if ctx.is_null() {
            return fail(crypto("EVP_PKEY_CTX_new_id"));
        }
        Ok(PkeyCtx(ctx))
    }
}

fn ok(rc: c_int, error: impl FnOnce() -> Error) -> Result<()> {
    if rc == 1 {
        Ok(())
    } else {
        fail(error())
    }
}

/// Parses DER with one of AWS-LC's CBS parsers, refusing trailing bytes.
fn parse(
    der: &[u8],
    parser: unsafe extern "C" fn(*mut sys::CBS) -> *mut sys::EVP_PKEY,
    what: &'static str,
) -> Result<Pkey> {
    // SAFETY: CBS is a plain (pointer, length) pair; CBS_init fills it
    // with der's bounds, and der outlives every use of cbs below.
    let mut cbs: sys::CBS = unsafe { std::mem::zeroed() };
    // SAFETY: cbs is a CBS of our own; CBS_init only stores der's
    // bounds in it.
    unsafe { sys::CBS_init(&mut cbs, der.as_ptr(), der.len()) };
    // SAFETY: cbs is initialised; the parser reads within its bounds.
    let key = unsafe { parser(&mut cbs) };
    if key.is_null() {
        return fail(invalid(what));
    }
    let key = Pkey(key);
    // SAFETY: cbs is still a valid CBS.
    if unsafe { sys::CBS_len(&cbs) } != 0 {
        return fail(invalid(what));
    }
    Ok(key)
}

/// The RSA key inside `key`, checked to be RSA and of a size keyserver
/// accepts.
fn rsa_of(key: &Pkey, what: &'static str) -> Result<*mut sys::RSA> {
    // SAFETY: key.0 is a valid EVP_PKEY.
    if unsafe { sys::EVP_PKEY_id(key.0) } != sys::EVP_PKEY_RSA {
        return fail(invalid(what));
    }
    // SAFETY: the key is RSA, so this returns its (borrowed) RSA.
    let rsa = unsafe { sys::EVP_PKEY_get0_RSA(key.0) };
    if rsa.is_null() {
        return fail(invalid(what));
    }
    // SAFETY: rsa is a valid RSA borrowed from key.
    let bits = unsafe { sys::RSA_bits(rsa) } as usize;
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return fail(invalid("unacceptable RSA key size"));
    }
    Ok(rsa)
}

pub(super) fn rsa_generate(bits: usize) -> Result<Zeroizing<Vec<u8>>> {
    let ctx = PkeyCtx::for_id(sys::EVP_PKEY_RSA)?;
    let bits = c_int::try_from(bits).map_err(|_| crypto("RSA key size"))?;
    // SAFETY: ctx is a valid RSA context; the default exponent is 65537.
    ok(unsafe { sys::EVP_PKEY_keygen_init(ctx.0) }, || {
        crypto("RSA key generation")
    })?;
    ok(
        // SAFETY: ctx is initialised for key generation.
        unsafe { sys::EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.0, bits) },
        || crypto("RSA key generation"),
    )?;
    let mut raw = ptr::null_mut();
    // SAFETY: ctx is initialised for key generation; raw receives a new key.
    ok(unsafe { sys::EVP_PKEY_keygen(ctx.0, &mut raw) }, || {
        crypto("RSA key generation")
    })?;
    if raw.is_null() {
        return fail(crypto("RSA key generation"));
    }
    let key = Pkey(raw);
    marshal_private(&key)
}

/// The PKCS#8 DER of a private key, copied into a zeroizing buffer and
/// cleansed where AWS-LC wrote it.
fn marshal_private(key: &Pkey) -> Result<Zeroizing<Vec<u8>>> {
    // SAFETY: a zeroed CBB is the state CBB_init expects.
    let mut cbb: sys::CBB = unsafe { std::mem::zeroed() };
    // SAFETY: cbb is ours; CBB_init allocates its growable buffer.
    if unsafe { sys::CBB_init(&mut cbb, 0) } != 1 {
        return fail(crypto("PKCS#8 encoding"));
    }
    // SAFETY: cbb is initialised and key.0 is a valid private key.
    if unsafe { sys::EVP_marshal_private_key(&mut cbb, key.0) } != 1 {
        // SAFETY: cbb is initialised; cleanup frees (and so drops) it.
        unsafe { sys::CBB_cleanup(&mut cbb) };
        return fail(crypto("PKCS#8 encoding"));
    }
    let mut data: *mut u8 = ptr::null_mut();
    let mut len = 0usize;
    // SAFETY: on success the buffer (data, len) is handed to us.
    if unsafe { sys::CBB_finish(&mut cbb, &mut data, &mut len) } != 1 || data.is_null() {
        // SAFETY: as above.
        unsafe { sys::CBB_cleanup(&mut cbb) };
        return fail(crypto("PKCS#8 encoding"));
    }
    // SAFETY: data points to len initialised bytes that we now own;
    // they are copied, cleansed, then freed exactly once.
    let out = Zeroizing::new(unsafe { std::slice::from_raw_parts(data, len) }.to_vec());
    // SAFETY: as above: AWS-LC's allocation of len bytes, ours to
    // cleanse and free, once, after the copy.
    unsafe {
        sys::OPENSSL_cleanse(data.cast::<c_void>(), len);
        sys::OPENSSL_free(data.cast::<c_void>());
    }
    Ok(out)
}

pub(super) fn rsa_check(pkcs8_der: &[u8]) -> Result<()> {
    let mismatch = "the private key does not match its public key";
    // Built from the components, then checked once (AWS-LC's parser
    // would check it too, then this a second time).
    let key = private_rsa(pkcs8_der)?;
    let rsa = rsa_of(&key, mismatch)?;
    // SAFETY: rsa is a valid RSA borrowed from key. RSA_check_key
    // checks n = pq, that d inverts e, and the CRT values.
    ok(unsafe { sys::RSA_check_key(rsa) }, || invalid(mismatch))
}

fn oaep(ctx: &PkeyCtx) -> Result<()> {
    // SAFETY: ctx is a valid RSA context initialised for encryption or
    // decryption; the digests are static.
    unsafe {
        ok(
            sys::EVP_PKEY_CTX_set_rsa_padding(ctx.0, sys::RSA_PKCS1_OAEP_PADDING),
            || crypto("RSA-OAEP parameters"),
        )?;
        ok(
            sys::EVP_PKEY_CTX_set_rsa_oaep_md(ctx.0, sys::EVP_sha256()),
            || crypto("RSA-OAEP parameters"),
        )?;
        ok(
            sys::EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.0, sys::EVP_sha256()),
            || crypto("RSA-OAEP parameters"),
        )
    }
}

pub(super) fn rsa_oaep_encrypt(spki_der: &[u8], dek: &[u8]) -> Result<Vec<u8>> {
    let key = parse(
        spki_der,
        sys::EVP_parse_public_key,
        "not a valid RSA public key",
    )?;
    rsa_of(&key, "not a valid RSA public key")?;
    let ctx = PkeyCtx::for_key(&key)?;
    // SAFETY: ctx is a valid context for an RSA public key.
    ok(unsafe { sys::EVP_PKEY_encrypt_init(ctx.0) }, || {
        crypto("RSA-OAEP encryption")
    })?;
    oaep(&ctx)?;
    let mut len = 0usize;
    ok(
        // SAFETY: a null output asks for the ciphertext length.
        unsafe { sys::EVP_PKEY_encrypt(ctx.0, ptr::null_mut(), &mut len, dek.as_ptr(), dek.len()) },
        || crypto("RSA-OAEP encryption"),
    )?;
    let mut out = vec![0u8; len];
    ok(
        // SAFETY: out has room for len bytes; len is updated to the length written.
        unsafe {
            sys::EVP_PKEY_encrypt(ctx.0, out.as_mut_ptr(), &mut len, dek.as_ptr(), dek.len())
        },
        || crypto("RSA-OAEP encryption"),
    )?;
    out.truncate(len);
    Ok(out)
}

/// An owned BIGNUM, cleared and freed on drop unless handed to an RSA
/// key.
struct Bn(*mut sys::BIGNUM);
impl Drop for Bn {
    fn drop(&mut self) {
        // SAFETY: the pointer came from BN_bin2bn or BN_new and is owned
        // here alone (a BIGNUM given to RSA_set0_* is released first);
        // BN_clear_free accepts NULL.
        unsafe { sys::BN_clear_free(self.0) }
    }
}
impl Bn {
    fn of(value: der::asn1::UintRef<'_>) -> Result<Self> {
        let bytes = value.as_bytes();
        // SAFETY: reads bytes within their bounds; a new BIGNUM is made.
        let bn = unsafe { sys::BN_bin2bn(bytes.as_ptr(), bytes.len(), ptr::null_mut()) };
        if bn.is_null() {
            return fail(crypto("RSA key components"));
        }
        Ok(Bn(bn))
    }
    /// Gives up ownership (to an RSA key that now frees it).
    fn release(self) -> *mut sys::BIGNUM {
        let bn = self.0;
        std::mem::forget(self);
        bn
    }
}

struct Rsa(*mut sys::RSA);
impl Drop for Rsa {
    fn drop(&mut self) {
        // SAFETY: non-null, from RSA_new, owned here alone until given
        // to an EVP_PKEY (then released first). RSA_free clears the
        // private components.
        unsafe { sys::RSA_free(self.0) }
    }
}

/// The RSA private key of a PKCS#8 document, built from its components
/// without the key-pair check AWS-LC's own parser runs on every parse
/// (`RSA_parse_private_key` calls `RSA_check_key`: a fifth of a fresh-key
/// unwrap), keeping only what AWS-LC's arithmetic assumes (`factors_of`).
/// `rsa_check` runs the full check once on the result; unwrapping
/// does not repeat it: the core runs
/// `rsa_check` (the full `RSA_check_key`) on these exact bytes before
/// any unwrap, once per document (`record::CheckedKeks`), and AWS-LC's
/// private operation still verifies its result with the public exponent
/// (its fault-attack check), so an inconsistent key gives an error,
/// never a wrong answer. The OpenSSL suite loads keys the same way.
fn private_rsa(pkcs8_der: &[u8]) -> Result<Pkey> {
    use der::Decode;
    let what = "not a valid RSA private key";
    let info = pkcs8::PrivateKeyInfoRef::from_der(pkcs8_der).map_err(|_| invalid(what))?;
    if info.algorithm.oid != pkcs1::ALGORITHM_OID {
        return Err(invalid("not an RSA private key"));
    }
    let k = pkcs1::RsaPrivateKeyRef::from_der(info.private_key.as_bytes())
        .map_err(|_| invalid(what))?;
    if k.other_prime_infos.is_some() {
        return Err(invalid("multi-prime RSA keys are not supported"));
    }
    // SAFETY: a new, empty RSA key.
    let rsa = Rsa(unsafe { sys::RSA_new() });
    if rsa.0.is_null() {
        return fail(crypto("RSA key"));
    }
    // Every component is made and checked before the key takes any:
    // a guard is released only right after the call that took it.
    let (n, e, d) = (
        Bn::of(k.modulus)?,
        Bn::of(k.public_exponent)?,
        Bn::of(k.private_exponent)?,
    );
    let (p, q) = (Bn::of(k.prime1)?, Bn::of(k.prime2)?);
    let (dp, dq, qinv) = (
        Bn::of(k.exponent1)?,
        Bn::of(k.exponent2)?,
        Bn::of(k.coefficient)?,
    );
    factors_of(&n, &e, &p, &q)?;
    // SAFETY: rsa is a fresh key; on success it owns n, e and d (so they
    // are released only then), on failure they stay ours and are freed.
    if unsafe { sys::RSA_set0_key(rsa.0, n.0, e.0, d.0) } != 1 {
        return fail(invalid(what));
    }
    let _ = (n.release(), e.release(), d.release());
    // SAFETY: as above, for the factors.
    if unsafe { sys::RSA_set0_factors(rsa.0, p.0, q.0) } != 1 {
        return fail(invalid(what));
    }
    let _ = (p.release(), q.release());
    // SAFETY: as above, for the CRT values.
    if unsafe { sys::RSA_set0_crt_params(rsa.0, dp.0, dq.0, qinv.0) } != 1 {
        return fail(invalid(what));
    }
    let _ = (dp.release(), dq.release(), qinv.release());
    // SAFETY: a new, empty EVP_PKEY.
    let raw = unsafe { sys::EVP_PKEY_new() };
    if raw.is_null() {
        return fail(crypto("RSA key"));
    }
    let key = Pkey(raw);
    // SAFETY: on success the EVP_PKEY owns the RSA key (released only
    // then); on failure the guard frees it.
    if unsafe { sys::EVP_PKEY_assign_RSA(key.0, rsa.0) } != 1 {
        return fail(crypto("RSA key"));
    }
    std::mem::forget(rsa);
    rsa_of(&key, what)?;
    Ok(key)
}

/// What AWS-LC's private operation assumes of a key and `RSA_check_key`
/// would otherwise have established first: e odd and of at most 33 bits
/// (its exponentiations in blinding and in the fault check cost time
/// linear in e's size), and n = p·q. AWS-LC's CRT code asserts that its
/// result is below n, which only n = p·q guarantees (a failed assertion
/// aborts where assertions are compiled in). One multiplication,
/// against a private operation's two exponentiations.
fn factors_of(n: &Bn, e: &Bn, p: &Bn, q: &Bn) -> Result<()> {
    let bad = || invalid("the private key does not match its public key");
    // SAFETY: reads of valid BIGNUMs owned by the guards.
    let e_ok = unsafe { sys::BN_is_odd(e.0) == 1 && (2..=33).contains(&sys::BN_num_bits(e.0)) };
    if !e_ok {
        return Err(bad());
    }
    // SAFETY: a new context and a new BIGNUM, both freed below.
    let (ctx, product) = unsafe { (sys::BN_CTX_new(), sys::BN_new()) };
    let product = Bn(product);
    if ctx.is_null() || product.0.is_null() {
        // SAFETY: BN_CTX_free accepts NULL.
        unsafe { sys::BN_CTX_free(ctx) };
        return fail(crypto("RSA key components"));
    }
    // SAFETY: every pointer is a valid BIGNUM or the context made above;
    // product does not alias p or q.
    let multiplied = unsafe { sys::BN_mul(product.0, p.0, q.0, ctx) };
    // SAFETY: made above, freed once.
    unsafe { sys::BN_CTX_free(ctx) };
    if multiplied != 1 {
        return fail(crypto("RSA key components"));
    }
    // SAFETY: reads of valid BIGNUMs.
    if unsafe { sys::BN_cmp(product.0, n.0) } != 0 {
        return Err(bad());
    }
    Ok(())
}

pub(super) fn rsa_oaep_decrypt(pkcs8_der: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let key = private_rsa(pkcs8_der)?;
    let ctx = PkeyCtx::for_key(&key)?;
    // SAFETY: ctx is a valid context for an RSA private key.
    ok(unsafe { sys::EVP_PKEY_decrypt_init(ctx.0) }, || {
        crypto("RSA-OAEP decryption")
    })?;
    oaep(&ctx)?;
    // The plaintext is never longer than the modulus.
    let mut out = Zeroizing::new(vec![0u8; MAX_RSA_BITS / 8]);
    let mut len = out.len();
    // SAFETY: out has room for len bytes; AWS-LC's OAEP decoding is
    // constant-time and blinded; every failure is the same opaque error.
    let rc = unsafe {
        sys::EVP_PKEY_decrypt(
            ctx.0,
            out.as_mut_ptr(),
            &mut len,
            wrapped.as_ptr(),
            wrapped.len(),
        )
    };
    if rc != 1 {
        return fail(Error::DecryptionFailed);
    }
    out.truncate(len);
    Ok(out)
}

fn md(hash: HkdfHash) -> Result<*const sys::EVP_MD> {
    // SAFETY: these return pointers to static digest tables.
    unsafe {
        Ok(match hash {
            HkdfHash::Sha256 => sys::EVP_sha256(),
            HkdfHash::Sha384 => sys::EVP_sha384(),
            HkdfHash::Sha512 => sys::EVP_sha512(),
            _ => return Err(unsupported(super::NAME, "this HKDF hash")),
        })
    }
}

fn too_long(okm: &[u8], hash: HkdfHash) -> bool {
    okm.len() > 255 * hash.len()
}

/// An AES-GCM key schedule: on the stack for one message, or boxed for
/// a session ([`PreparedGcm`]). Cleaned up and wiped when dropped. Never
/// moved once initialised (AWS-LC aligns its state relative to the
/// context's address).
struct GcmCtx(sys::EVP_AEAD_CTX);

impl GcmCtx {
    fn init(&mut self, key: &[u8]) -> Result<()> {
        // SAFETY: these return pointers to static AEAD tables.
        let aead = unsafe {
            match key.len() {
                16 => sys::EVP_aead_aes_128_gcm(),
                24 => sys::EVP_aead_aes_192_gcm(),
                32 => sys::EVP_aead_aes_256_gcm(),
                _ => return Err(invalid("wrong AES key length")),
            }
        };
        // SAFETY: self.0 is a zeroed context owned here; key is read
        // within its bounds; the default (16-byte) tag; no engine.
        let rc = unsafe {
            sys::EVP_AEAD_CTX_init(
                &mut self.0,
                aead,
                key.as_ptr(),
                key.len(),
                0,
                ptr::null_mut(),
            )
        };
        ok(rc, || invalid("wrong AES key length"))
    }
}

impl Drop for GcmCtx {
    fn drop(&mut self) {
        // SAFETY: cleanup accepts a zeroed or an initialised context;
        // then the whole context (the key schedule) is wiped.
        unsafe {
            sys::EVP_AEAD_CTX_cleanup(&mut self.0);
            sys::OPENSSL_cleanse(
                ptr::from_mut(&mut self.0).cast::<c_void>(),
                std::mem::size_of::<sys::EVP_AEAD_CTX>(),
            );
        }
    }
}

fn gcm_ctx() -> GcmCtx {
    // SAFETY: EVP_AEAD_CTX is plain data; all zeroes is the state
    // EVP_AEAD_CTX_zero gives.
    GcmCtx(unsafe { std::mem::zeroed() })
}

/// AES-GCM of `plaintext`, written after the bytes `out` already holds,
/// then the tag: straight into `out`'s spare capacity, no copy of the
/// plaintext first. On failure `out` is as it was.
pub(super) fn gcm_seal_append(
    key: &[u8],
    nonce: &[u8; super::GCM_NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let mut ctx = gcm_ctx();
    ctx.init(key)?;
    seal_with(&ctx, nonce, aad, plaintext, out)
}

/// An AES-GCM key schedule set up once and kept on the heap (where it
/// never moves), for many messages: envelope v2's session key.
pub(super) struct PreparedGcm(Box<GcmCtx>);

// SAFETY: the context is only read after `init` (every method below
// takes `&self` and passes a const pointer), and AWS-LC documents
// EVP_AEAD_CTX_seal and _open_gather as safe to call concurrently on one
// context for the AES-GCM AEADs (include/openssl/aead.h, "Concurrency",
// tested by its ConcurrentStability fixture). The raw pointer inside
// points to a static AEAD table.
unsafe impl Send for PreparedGcm {}
// SAFETY: as above.
unsafe impl Sync for PreparedGcm {}

impl PreparedGcm {
    pub(super) fn new(key: &[u8]) -> Result<Self> {
        let mut ctx = Box::new(gcm_ctx());
        ctx.init(key)?;
        Ok(PreparedGcm(ctx))
    }
}

impl keyserver_core::plugin::GcmKey for PreparedGcm {
    fn seal_append(
        &self,
        nonce: &[u8; super::GCM_NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        super::check_gcm_len(plaintext.len())?;
        seal_with(&self.0, nonce, aad, plaintext, out)
    }

    fn open_append(
        &self,
        nonce: &[u8; super::GCM_NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; super::GCM_TAG_LEN],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        open_with(&self.0, nonce, aad, ciphertext, tag, out)
    }
}

fn seal_with(
    ctx: &GcmCtx,
    nonce: &[u8; super::GCM_NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let room = plaintext.len() + super::GCM_TAG_LEN;
    keyserver_core::plugin::reserve_wiped(out, room);
    let start = out.len();
    let mut written = 0usize;
    // SAFETY: the context is initialised; the output is out's spare
    // capacity (at least room bytes, reserved above), which does not
    // overlap plaintext, nonce or aad (shared borrows while out is
    // borrowed mutably); AWS-LC writes at most room bytes and sets
    // written.
    let rc = unsafe {
        sys::EVP_AEAD_CTX_seal(
            &ctx.0,
            out.as_mut_ptr().add(start),
            &mut written,
            room,
            nonce.as_ptr(),
            nonce.len(),
            plaintext.as_ptr(),
            plaintext.len(),
            aad.as_ptr(),
            aad.len(),
        )
    };
    if rc != 1 || written != room {
        // SAFETY: the spare capacity written to is wiped (it may hold
        // part of a ciphertext; never plaintext, which was not copied).
        unsafe { ptr::write_bytes(out.as_mut_ptr().add(start), 0, room) };
        return fail(crypto("AES-GCM seal"));
    }
    // SAFETY: AWS-LC initialised exactly room bytes after start.
    unsafe { out.set_len(start + room) };
    Ok(())
}

/// Opens AES-GCM `ciphertext` with `tag`, writing the plaintext after
/// the bytes `out` already holds, straight into its spare capacity. On
/// failure `out` is as it was and what was written there is wiped.
pub(super) fn gcm_open_append(
    key: &[u8],
    nonce: &[u8; super::GCM_NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8; super::GCM_TAG_LEN],
    out: &mut Vec<u8>,
) -> Result<()> {
    let mut ctx = gcm_ctx();
    ctx.init(key)?;
    open_with(&ctx, nonce, aad, ciphertext, tag, out)
}

fn open_with(
    ctx: &GcmCtx,
    nonce: &[u8; super::GCM_NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8; super::GCM_TAG_LEN],
    out: &mut Vec<u8>,
) -> Result<()> {
    keyserver_core::plugin::reserve_wiped(out, ciphertext.len());
    let start = out.len();
    // SAFETY: the context is initialised; the output is out's spare
    // capacity (at least ciphertext.len() bytes), not overlapping any
    // input; AWS-LC checks the tag and writes at most that many bytes.
    let rc = unsafe {
        sys::EVP_AEAD_CTX_open_gather(
            &ctx.0,
            out.as_mut_ptr().add(start),
            nonce.as_ptr(),
            nonce.len(),
            ciphertext.as_ptr(),
            ciphertext.len(),
            tag.as_ptr(),
            tag.len(),
            aad.as_ptr(),
            aad.len(),
        )
    };
    if rc != 1 {
        // SAFETY: whatever was written to the spare capacity is wiped:
        // no unauthenticated plaintext stays behind.
        unsafe { ptr::write_bytes(out.as_mut_ptr().add(start), 0, ciphertext.len()) };
        return fail(Error::DecryptionFailed);
    }
    // SAFETY: on success AWS-LC wrote exactly ciphertext.len() bytes.
    unsafe { out.set_len(start + ciphertext.len()) };
    Ok(())
}

pub(super) fn hkdf(
    hash: HkdfHash,
    ikm: &[u8],
    salt: &[u8],
    info: &[u8],
    okm: &mut [u8],
) -> Result<()> {
    if too_long(okm, hash) {
        return Err(crypto("HKDF output too long"));
    }
    // SAFETY: every pointer is paired with its slice's own length.
    let rc = unsafe {
        sys::HKDF(
            okm.as_mut_ptr(),
            okm.len(),
            md(hash)?,
            ikm.as_ptr(),
            ikm.len(),
            salt.as_ptr(),
            salt.len(),
            info.as_ptr(),
            info.len(),
        )
    };
    ok(rc, || crypto("HKDF"))
}

pub(super) fn hkdf_extract(hash: HkdfHash, salt: &[u8], ikm: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let mut prk = Zeroizing::new(vec![0u8; hash.len()]);
    let mut len = 0usize;
    // SAFETY: prk has room for the digest length (the PRK's length).
    let rc = unsafe {
        sys::HKDF_extract(
            prk.as_mut_ptr(),
            &mut len,
            md(hash)?,
            ikm.as_ptr(),
            ikm.len(),
            salt.as_ptr(),
            salt.len(),
        )
    };
    ok(rc, || crypto("HKDF-Extract"))?;
    prk.truncate(len);
    Ok(prk)
}

pub(super) fn hkdf_expand(hash: HkdfHash, prk: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
    if too_long(okm, hash) {
        return Err(crypto("HKDF output too long"));
    }
    if prk.len() < hash.len() {
        return Err(crypto("HKDF pseudorandom key too short"));
    }
    // SAFETY: every pointer is paired with its slice's own length.
    let rc = unsafe {
        sys::HKDF_expand(
            okm.as_mut_ptr(),
            okm.len(),
            md(hash)?,
            prk.as_ptr(),
            prk.len(),
            info.as_ptr(),
            info.len(),
        )
    };
    ok(rc, || crypto("HKDF-Expand"))
}

fn ml_kem_nid(params: MlKem) -> Result<c_int> {
    Ok(match params {
        MlKem::MlKem768 => sys::NID_MLKEM768,
        MlKem::MlKem1024 => sys::NID_MLKEM1024,
        _ => return Err(unsupported(super::NAME, "this ML-KEM parameter set")),
    })
}

/// The ML-KEM key pair of the 64-byte seed `d || z`
/// (ML-KEM.KeyGen_internal).
fn ml_kem_key(params: MlKem, seed: &[u8]) -> Result<Pkey> {
    if seed.len() != 64 {
        return Err(invalid("an ML-KEM seed is 64 bytes"));
    }
    let ctx = PkeyCtx::for_id(sys::EVP_PKEY_KEM)?;
    ok(
        // SAFETY: ctx is a KEM context; the NID is one AWS-LC defines.
        unsafe { sys::EVP_PKEY_CTX_kem_set_params(ctx.0, ml_kem_nid(params)?) },
        || crypto("ML-KEM parameters"),
    )?;
    // SAFETY: ctx is a live KEM context with its parameters set.
    ok(unsafe { sys::EVP_PKEY_keygen_init(ctx.0) }, || {
        crypto("ML-KEM key generation")
    })?;
    let mut raw = ptr::null_mut();
    let mut seed_len = seed.len();
    ok(
        // SAFETY: seed holds seed_len bytes; raw receives a new key.
        unsafe {
            sys::EVP_PKEY_keygen_deterministic(ctx.0, &mut raw, seed.as_ptr(), &mut seed_len)
        },
        || crypto("ML-KEM key generation"),
    )?;
    if raw.is_null() {
        return fail(crypto("ML-KEM key generation"));
    }
    Ok(Pkey(raw))
}

pub(super) fn ml_kem_keygen(params: MlKem, seed: &[u8]) -> Result<Vec<u8>> {
    let key = ml_kem_key(params, seed)?;
    let mut ek = vec![0u8; params.encapsulation_key_len()];
    let mut len = ek.len();
    ok(
        // SAFETY: ek has room for len bytes; len is updated to the length written.
        unsafe { sys::EVP_PKEY_get_raw_public_key(key.0, ek.as_mut_ptr(), &mut len) },
        || crypto("ML-KEM key export"),
    )?;
    if len != ek.len() {
        return fail(crypto("ML-KEM key export"));
    }
    Ok(ek)
}

pub(super) fn ml_kem_encaps(
    params: MlKem,
    ek: &[u8],
    m: &[u8],
) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    if ek.len() != params.encapsulation_key_len() {
        return Err(invalid("not an ML-KEM encapsulation key"));
    }
    if m.len() != 32 {
        return Err(invalid("m is 32 bytes"));
    }
    // SAFETY: ek holds ek.len() bytes; a null result is checked.
    let raw =
        unsafe { sys::EVP_PKEY_kem_new_raw_public_key(ml_kem_nid(params)?, ek.as_ptr(), ek.len()) };
    if raw.is_null() {
        return fail(invalid("not an ML-KEM encapsulation key"));
    }
    let key = Pkey(raw);
    let ctx = PkeyCtx::for_key(&key)?;
    let mut ct = vec![0u8; params.ciphertext_len()];
    let mut ct_len = ct.len();
    let mut ss = Zeroizing::new(vec![0u8; 32]);
    let mut ss_len = ss.len();
    let mut m_len = m.len();
    // SAFETY: each buffer has room for the length passed beside it.
    // AWS-LC runs the FIPS 203 §7.2 modulus check on ek before it
    // encapsulates.
    let rc = unsafe {
        sys::EVP_PKEY_encapsulate_deterministic(
            ctx.0,
            ct.as_mut_ptr(),
            &mut ct_len,
            ss.as_mut_ptr(),
            &mut ss_len,
            m.as_ptr(),
            &mut m_len,
        )
    };
    ok(rc, || invalid("not an ML-KEM encapsulation key"))?;
    if ct_len != ct.len() || ss_len != ss.len() {
        return fail(crypto("ML-KEM encapsulation"));
    }
    Ok((ct, ss))
}

pub(super) fn ml_kem_decaps(params: MlKem, seed: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if ct.len() != params.ciphertext_len() {
        return Err(invalid("wrong ML-KEM ciphertext length"));
    }
    let key = ml_kem_key(params, seed)?;
    let ctx = PkeyCtx::for_key(&key)?;
    let mut ss = Zeroizing::new(vec![0u8; 32]);
    let mut ss_len = ss.len();
    // SAFETY: ss has room for ss_len bytes; ct holds ct.len() bytes.
    // Decapsulation rejects implicitly: a bad ciphertext gives a
    // pseudorandom key, not an error.
    let rc = unsafe {
        sys::EVP_PKEY_decapsulate(ctx.0, ss.as_mut_ptr(), &mut ss_len, ct.as_ptr(), ct.len())
    };
    ok(rc, || crypto("ML-KEM decapsulation"))?;
    if ss_len != ss.len() {
        return fail(crypto("ML-KEM decapsulation"));
    }
    Ok(ss)
}

pub(super) fn shake256(data: &[u8], out: &mut [u8]) -> Result<()> {
    struct MdCtx(*mut sys::EVP_MD_CTX);
    impl Drop for MdCtx {
        fn drop(&mut self) {
            // SAFETY: non-null, from EVP_MD_CTX_new, owned here.
            unsafe { sys::EVP_MD_CTX_free(self.0) }
        }
    }
    // SAFETY: a plain constructor; a null result is checked.
    let raw = unsafe { sys::EVP_MD_CTX_new() };
    if raw.is_null() {
        return fail(crypto("SHAKE256"));
    }
    let ctx = MdCtx(raw);
    // SAFETY: ctx is valid; data and out are paired with their lengths.
    unsafe {
        ok(
            sys::EVP_DigestInit_ex(ctx.0, sys::EVP_shake256(), ptr::null_mut()),
            || crypto("SHAKE256"),
        )?;
        ok(
            sys::EVP_DigestUpdate(ctx.0, data.as_ptr().cast::<c_void>(), data.len()),
            || crypto("SHAKE256"),
        )?;
        ok(
            sys::EVP_DigestFinalXOF(ctx.0, out.as_mut_ptr(), out.len()),
            || crypto("SHAKE256"),
        )
    }
}
