//! HPKE (RFC 9180) in base mode with DHKEM on the NIST curves: how a DEK is
//! wrapped under an elliptic-curve KEK.
//!
//! The composition (the KEM's ExtractAndExpand, the key schedule, the
//! nonces) lives here, in the core, once; the primitives under it (ECDH,
//! HKDF-Extract, HKDF-Expand, AES-GCM, the key generation) come from the
//! [`CipherSuite`], so every suite produces the same bytes and OpenSSL 3.0,
//! which has ECDH but no HPKE, takes part like any other. The RFC's test
//! vectors for P-256 and P-521 pin this code in every suite, and the
//! independent `hpke` crate cross-checks it at every curve (tests).
//!
//! One ciphersuite per curve, the KDF and the KEM's hash matching the curve's
//! strength:
//!
//! | curve | KEM | KDF | AEAD |
//! | --- | --- | --- | --- |
//! | P-256 | DHKEM(P-256, HKDF-SHA256) `0x0010` | HKDF-SHA256 `0x0001` | AES-128-GCM `0x0001` |
//! | P-384 | DHKEM(P-384, HKDF-SHA384) `0x0011` | HKDF-SHA384 `0x0002` | AES-256-GCM `0x0002` |
//! | P-521 | DHKEM(P-521, HKDF-SHA512) `0x0012` | HKDF-SHA512 `0x0003` | AES-256-GCM `0x0002` |
//!
//! HPKE defines no AES-192-GCM, so a 192-bit key is wrapped with
//! AES-256-GCM (stronger than it needs).
//!
//! # Example
//!
//! ```
//! # {
//! use keyserver::crypto::EcKek;
//! use keyserver::{Curve, Kek};
//! use keyserver::backends::RustCrypto;
//! use keyserver::hpke;
//!
//! let suite = RustCrypto::new();
//! let kek = Kek::from_pkcs8_der(&suite.generate_ec(Curve::P384)?)?;
//! let (curve, point) = keyserver::plugin::ec_public_point(kek.public_key_der())?;
//! let (enc, ct) = hpke::seal(&suite, curve, point, b"info", b"aad", b"a data key")?;
//! let pt = hpke::open(&suite, kek.pkcs8_der(), &enc, b"info", b"aad", &ct)?;
//! assert_eq!(&pt[..], b"a data key");
//! assert!(hpke::open(&suite, kek.pkcs8_der(), &enc, b"info", b"other", &ct).is_err());
//! # }
//! # Ok::<(), keyserver::Error>(())
//! ```

use std::fmt;

use zeroize::Zeroizing;

use crate::crypto::{ec_kek, HkdfHash, GCM_NONCE_LEN, GCM_TAG_LEN};
use crate::ec::{check_point_form, ec_private_parts};
use crate::{CipherSuite, Curve, Error, Result};

/// The KEM of an HPKE ciphersuite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kem {
    /// DHKEM on a NIST curve, with the curve's HKDF-SHA2 (RFC 9180 §4.1).
    Dh(Curve),
    /// A hybrid ML-KEM + ECDH KEM (draft-ietf-hpke-pq).
    Hybrid(crate::HybridKem),
}

impl Kem {
    /// The KEM id (RFC 9180 §7.1, draft-ietf-hpke-pq).
    pub const fn id(self) -> u16 {
        match self {
            Kem::Dh(Curve::P256) => 0x0010,
            Kem::Dh(Curve::P384) => 0x0011,
            Kem::Dh(Curve::P521) => 0x0012,
            Kem::Hybrid(kem) => kem.kem_id(),
        }
    }
}

/// An RFC 9180 ciphersuite: a KEM, a KDF and an AEAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ciphersuite {
    /// The KEM.
    pub kem: Kem,
    /// The KEM id.
    pub kem_id: u16,
    /// The KDF id (0x0001 HKDF-SHA256, 0x0002 HKDF-SHA384, 0x0003 HKDF-SHA512).
    pub kdf_id: u16,
    /// The AEAD id (0x0001 AES-128-GCM, 0x0002 AES-256-GCM).
    pub aead_id: u16,
}

impl Ciphersuite {
    /// The ciphersuite keyserver uses with `curve` (table above).
    pub const fn for_curve(curve: Curve) -> Self {
        let (kdf_id, aead_id) = match curve {
            Curve::P256 => (0x0001, 0x0001),
            Curve::P384 => (0x0002, 0x0002),
            Curve::P521 => (0x0003, 0x0002),
        };
        Ciphersuite {
            kem: Kem::Dh(curve),
            kem_id: Kem::Dh(curve).id(),
            kdf_id,
            aead_id,
        }
    }

    /// The ciphersuite keyserver uses with a hybrid KEM: MLKEM768-P256 with
    /// HKDF-SHA256, MLKEM1024-P384 with HKDF-SHA384, both with AES-256-GCM
    /// (what a 192- or 256-bit DEK needs).
    pub const fn for_hybrid(kem: crate::HybridKem) -> Self {
        let kdf_id = match kem {
            crate::HybridKem::MlKem768P256 => 0x0001,
            crate::HybridKem::MlKem1024P384 => 0x0002,
        };
        Ciphersuite {
            kem: Kem::Hybrid(kem),
            kem_id: kem.kem_id(),
            kdf_id,
            aead_id: 0x0002,
        }
    }

    /// Any supported combination, by its ids (for known-answer tests).
    ///
    /// # Errors
    /// [`Error::Policy`] for a KDF other than HKDF-SHA2 or an AEAD other
    /// than AES-GCM.
    pub fn new(kem: Kem, kdf_id: u16, aead_id: u16) -> Result<Self> {
        if !(1..=3).contains(&kdf_id) || !(1..=2).contains(&aead_id) {
            return Err(crate::crypto::unsupported("HPKE", "this KDF or AEAD"));
        }
        Ok(Ciphersuite {
            kem,
            kem_id: kem.id(),
            kdf_id,
            aead_id,
        })
    }

    /// The DHKEM's hash (the curve's), for its ExtractAndExpand.
    const fn dh_hash(curve: Curve) -> HkdfHash {
        match curve {
            Curve::P256 => HkdfHash::Sha256,
            Curve::P384 => HkdfHash::Sha384,
            Curve::P521 => HkdfHash::Sha512,
        }
    }

    /// The KDF of the key schedule.
    const fn hash(self) -> HkdfHash {
        match self.kdf_id {
            0x0001 => HkdfHash::Sha256,
            0x0002 => HkdfHash::Sha384,
            _ => HkdfHash::Sha512,
        }
    }

    /// Nk: the AEAD key length.
    const fn n_k(self) -> usize {
        if self.aead_id == 0x0001 {
            16
        } else {
            32
        }
    }

    /// Length of `enc` (Nenc).
    pub const fn enc_len(self) -> usize {
        match self.kem {
            Kem::Dh(curve) => curve.point_len(),
            Kem::Hybrid(kem) => kem.enc_len(),
        }
    }

    fn kem_suite_id(self) -> [u8; 5] {
        let id = self.kem_id.to_be_bytes();
        [b'K', b'E', b'M', id[0], id[1]]
    }

    fn hpke_suite_id(self) -> [u8; 10] {
        let (k, f, a) = (
            self.kem_id.to_be_bytes(),
            self.kdf_id.to_be_bytes(),
            self.aead_id.to_be_bytes(),
        );
        [b'H', b'P', b'K', b'E', k[0], k[1], f[0], f[1], a[0], a[1]]
    }
}

const VERSION_LABEL: &[u8] = b"HPKE-v1";

/// LabeledExtract(salt, label, ikm) of RFC 9180 §4.
fn labeled_extract<C: CipherSuite + ?Sized>(
    suite: &C,
    hash: HkdfHash,
    suite_id: &[u8],
    salt: &[u8],
    label: &[u8],
    ikm: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let labeled_ikm = Zeroizing::new([VERSION_LABEL, suite_id, label, ikm].concat());
    suite.hkdf_extract(hash, salt, &labeled_ikm)
}

/// LabeledExpand(prk, label, info, L) of RFC 9180 §4.
fn labeled_expand<C: CipherSuite + ?Sized>(
    suite: &C,
    hash: HkdfHash,
    suite_id: &[u8],
    prk: &[u8],
    label: &[u8],
    info: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let l =
        u16::try_from(len).map_err(|_| crate::crypto::unsupported(suite.name(), "this length"))?;
    let labeled_info = [&l.to_be_bytes()[..], VERSION_LABEL, suite_id, label, info].concat();
    let mut out = Zeroizing::new(vec![0u8; len]);
    suite.hkdf_expand(hash, prk, &labeled_info, &mut out)?;
    Ok(out)
}

/// ExtractAndExpand(dh, kem_context) of DHKEM (RFC 9180 §4.1).
fn extract_and_expand<C: CipherSuite + ?Sized>(
    suite: &C,
    curve: Curve,
    dh: &[u8],
    kem_context: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let id = Ciphersuite::for_curve(curve).kem_suite_id();
    let hash = Ciphersuite::dh_hash(curve);
    let eae_prk = labeled_extract(suite, hash, &id, b"", b"eae_prk", dh)?;
    labeled_expand(
        suite,
        hash,
        &id,
        &eae_prk,
        b"shared_secret",
        kem_context,
        hash.len(),
    )
}

/// An HPKE context after the base-mode key schedule (RFC 9180 §5.1): the
/// AEAD key, the base nonce and the sequence number. Secrets are wiped on
/// drop and redacted in `Debug`.
pub struct Context {
    cs: Ciphersuite,
    key: Zeroizing<Vec<u8>>,
    base_nonce: [u8; GCM_NONCE_LEN],
    seq: u64,
}

impl Drop for Context {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.base_nonce.zeroize();
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("ciphersuite", &self.cs)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// KeySchedule(mode_base, shared_secret, info, "", "").
    pub(crate) fn schedule<C: CipherSuite + ?Sized>(
        suite: &C,
        cs: Ciphersuite,
        shared_secret: &[u8],
        info: &[u8],
    ) -> Result<Self> {
        let (hash, id) = (cs.hash(), cs.hpke_suite_id());
        let psk_id_hash = labeled_extract(suite, hash, &id, b"", b"psk_id_hash", b"")?;
        let info_hash = labeled_extract(suite, hash, &id, b"", b"info_hash", info)?;
        let context = [&[0u8][..], &psk_id_hash, &info_hash].concat();
        let secret = labeled_extract(suite, hash, &id, shared_secret, b"secret", b"")?;
        let key = labeled_expand(suite, hash, &id, &secret, b"key", &context, cs.n_k())?;
        let nonce = labeled_expand(
            suite,
            hash,
            &id,
            &secret,
            b"base_nonce",
            &context,
            GCM_NONCE_LEN,
        )?;
        let mut base_nonce = [0u8; GCM_NONCE_LEN];
        base_nonce.copy_from_slice(&nonce);
        Ok(Context {
            cs,
            key,
            base_nonce,
            seq: 0,
        })
    }

    /// The nonce of the current sequence number (RFC 9180 §5.2); the
    /// number moves on only once a message was sealed or opened.
    fn nonce(&self) -> Result<[u8; GCM_NONCE_LEN]> {
        if self.seq == u64::MAX {
            return Err(crate::crypto::unsupported(
                "HPKE",
                "more messages per context",
            ));
        }
        let mut nonce = self.base_nonce;
        for (n, s) in nonce[GCM_NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        Ok(nonce)
    }

    /// ContextS.Seal(aad, pt): ciphertext then tag.
    pub fn seal<C: CipherSuite + ?Sized>(
        &mut self,
        suite: &C,
        aad: &[u8],
        pt: &[u8],
    ) -> Result<Vec<u8>> {
        let nonce = self.nonce()?;
        let sealed = suite.aes_gcm_seal(&self.key, &nonce, aad, pt)?;
        self.seq += 1;
        Ok(sealed)
    }

    /// ContextR.Open(aad, ct). Any failure is
    /// [`Error::DecryptionFailed`].
    pub fn open<C: CipherSuite + ?Sized>(
        &mut self,
        suite: &C,
        aad: &[u8],
        ct: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        if ct.len() < GCM_TAG_LEN {
            return Err(Error::DecryptionFailed);
        }
        let nonce = self.nonce()?;
        // A message that does not open leaves the context where it was.
        let opened = suite.aes_gcm_open(&self.key, &nonce, aad, ct)?;
        self.seq += 1;
        Ok(opened)
    }
}

/// SetupBaseS(pkR, info) with the ephemeral key `ephemeral_pkcs8` (an EC
/// private key in PKCS#8 of the same curve), or a fresh one from
/// [`EcKek::generate_ec`](crate::crypto::EcKek::generate_ec) when `None`: returns `enc` and the sender's
/// context. A fixed ephemeral key is for known-answer tests only; reusing
/// one across messages would void HPKE's security.
///
/// # Errors
/// [`Error::InvalidKey`] for a recipient point not on `curve` or an
/// ephemeral key of another curve; the suite's errors.
pub fn setup_sender<C: CipherSuite + ?Sized>(
    suite: &C,
    curve: Curve,
    pk_r: &[u8],
    info: &[u8],
    ephemeral_pkcs8: Option<&[u8]>,
) -> Result<(Vec<u8>, Context)> {
    check_point_form(curve, pk_r)?;
    let cs = Ciphersuite::for_curve(curve);
    let fresh;
    let sk_e = match ephemeral_pkcs8 {
        Some(der) => der,
        None => {
            fresh = ec_kek(suite)?.generate_ec(curve)?;
            &fresh[..]
        }
    };
    let eph = ec_private_parts(sk_e)?;
    if eph.curve != curve {
        return Err(Error::InvalidKey {
            reason: "the ephemeral key is on another curve".into(),
        });
    }
    let dh = ec_kek(suite)?.ecdh(sk_e, pk_r)?;
    let enc = eph.point.to_vec();
    let kem_context = [&enc[..], pk_r].concat();
    let shared_secret = extract_and_expand(suite, curve, &dh, &kem_context)?;
    let context = Context::schedule(suite, cs, &shared_secret, info)?;
    Ok((enc, context))
}

/// SetupBaseR(enc, skR, info): the recipient's context, with the private
/// key `sk_r_pkcs8` (EC, PKCS#8, its public point included).
///
/// # Errors
/// [`Error::InvalidKey`] for a malformed key or an `enc` that is not a
/// point of the key's curve.
pub fn setup_receiver<C: CipherSuite + ?Sized>(
    suite: &C,
    sk_r_pkcs8: &[u8],
    enc: &[u8],
    info: &[u8],
) -> Result<Context> {
    let recipient = ec_private_parts(sk_r_pkcs8)?;
    let cs = Ciphersuite::for_curve(recipient.curve);
    check_point_form(recipient.curve, enc)?;
    let dh = ec_kek(suite)?.ecdh(sk_r_pkcs8, enc)?;
    let kem_context = [enc, recipient.point].concat();
    let shared_secret = extract_and_expand(suite, recipient.curve, &dh, &kem_context)?;
    Context::schedule(suite, cs, &shared_secret, info)
}

/// Single-shot Seal (RFC 9180 §6.1) to the public point `pk_r` of `curve`,
/// with a fresh ephemeral key: returns `(enc, ct)`.
///
/// # Errors
/// As for [`setup_sender`].
pub fn seal<C: CipherSuite + ?Sized>(
    suite: &C,
    curve: Curve,
    pk_r: &[u8],
    info: &[u8],
    aad: &[u8],
    pt: &[u8],
) -> Result<(Vec<u8>, Vec<u8>)> {
    let (enc, mut context) = setup_sender(suite, curve, pk_r, info, None)?;
    let ct = context.seal(suite, aad, pt)?;
    Ok((enc, ct))
}

/// Single-shot Open (RFC 9180 §6.1) with the private key `sk_r_pkcs8`.
///
/// # Errors
/// [`Error::InvalidKey`] as for [`setup_receiver`];
/// [`Error::DecryptionFailed`] for any change to `enc`'s secret, `info`,
/// `aad` or `ct`.
pub fn open<C: CipherSuite + ?Sized>(
    suite: &C,
    sk_r_pkcs8: &[u8],
    enc: &[u8],
    info: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    setup_receiver(suite, sk_r_pkcs8, enc, info)?.open(suite, aad, ct)
}
