//! Hybrid post-quantum KEKs: the HPKE KEMs MLKEM768-P256 and MLKEM1024-P384
//! of draft-ietf-hpke-pq (ML-KEM, FIPS 203, combined with ECDH on a NIST
//! curve), so a wrapped DEK stays secret if either ML-KEM or the curve is
//! broken, including by a quantum computer that breaks the curve.
//!
//! As with [`crate::hpke`], the composition lives here, in the core: key
//! expansion from the 32-byte seed (SHAKE256), rejection sampling of the EC
//! scalar, the combiner (SHA3-256 over both shared secrets, the EC
//! ciphertext and public key, and the KEM's name), and the HPKE key
//! schedule. The primitives under it (ML-KEM, ECDH, SHA-3, HKDF, AES-GCM)
//! come from the [`CipherSuite`]. The draft's test vectors pin it, and the
//! `hpke` crate cross-checks it (tests).
//!
//! | strength | KEM | KDF | AEAD |
//! | --- | --- | --- | --- |
//! | 128 | MLKEM768-P256 `0x0050` | HKDF-SHA256 | AES-256-GCM |
//! | 192, 256 | MLKEM1024-P384 `0x0051` | HKDF-SHA384 | AES-256-GCM |
//!
//! # The private key document
//!
//! No IETF document defines a PKCS#8 algorithm for these hybrid HPKE keys
//! (the LAMPS ML-KEM key format is for ML-KEM alone, and the LAMPS
//! composite KEMs use another combiner), so keyserver defines one, in the
//! same spirit (a seed, as LAMPS prefers for ML-KEM, and the public key
//! alongside, as RFC 5915 does for EC):
//!
//! ```text
//! -----BEGIN HPKE PRIVATE KEY-----   (DER, base64)
//! HpkePrivateKey ::= SEQUENCE {
//!     version    INTEGER (1),
//!     kemId      INTEGER,                   -- 80 (0x0050) or 81 (0x0051)
//!     seed       OCTET STRING (SIZE (32)),  -- the HPKE private key (skRm)
//!     publicKey  OCTET STRING }             -- pkRm = ek_PQ || ek_T
//! HpkePublicKey ::= SEQUENCE {
//!     kemId      INTEGER,
//!     publicKey  OCTET STRING }
//! ```
//!
//! The key id is the SHA-256 of the DER `HpkePublicKey`.

use std::fmt;

use der::asn1::OctetStringRef;
use der::{Decode, Encode};
use zeroize::Zeroizing;

use crate::crypto::{ec_kek, hybrid_kek, MlKem};
use crate::ec::{check_point_form, ec_pkcs8_der};
use crate::hpke::{Ciphersuite, Context};
use crate::{CipherSuite, Curve, Error, Result, Strength};

/// A hybrid ML-KEM + ECDH HPKE KEM (draft-ietf-hpke-pq).
///
/// ```
/// use keyserver::{HybridKem, Strength};
///
/// assert_eq!(HybridKem::for_strength(Strength::S192), HybridKem::MlKem1024P384);
/// assert_eq!(HybridKem::MlKem768P256.to_string(), "MLKEM768-P256");
/// assert_eq!(HybridKem::MlKem768P256.public_key_len(), 1249);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HybridKem {
    /// ML-KEM-768 with P-256 (KEM id 0x0050).
    MlKem768P256,
    /// ML-KEM-1024 with P-384 (KEM id 0x0051).
    MlKem1024P384,
}

impl HybridKem {
    /// The KEM of a KEK of `strength`: MLKEM768-P256 for 128,
    /// MLKEM1024-P384 for 192 and 256 (at 192 each half alone is as strong
    /// as the DEK: P-384 and ML-KEM-1024).
    pub const fn for_strength(strength: Strength) -> Self {
        match strength {
            Strength::S128 => HybridKem::MlKem768P256,
            Strength::S192 | Strength::S256 => HybridKem::MlKem1024P384,
        }
    }

    /// The HPKE KEM id.
    pub const fn kem_id(self) -> u16 {
        match self {
            HybridKem::MlKem768P256 => 0x0050,
            HybridKem::MlKem1024P384 => 0x0051,
        }
    }

    /// The KEM of an id.
    pub fn from_kem_id(id: u16) -> Option<Self> {
        [HybridKem::MlKem768P256, HybridKem::MlKem1024P384]
            .into_iter()
            .find(|k| k.kem_id() == id)
    }

    /// The ML-KEM parameter set.
    pub const fn ml_kem(self) -> MlKem {
        match self {
            HybridKem::MlKem768P256 => MlKem::MlKem768,
            HybridKem::MlKem1024P384 => MlKem::MlKem1024,
        }
    }

    /// The curve.
    pub const fn curve(self) -> Curve {
        match self {
            HybridKem::MlKem768P256 => Curve::P256,
            HybridKem::MlKem1024P384 => Curve::P384,
        }
    }

    /// The security strength claimed, the ML-KEM's category (FIPS 203:
    /// ML-KEM-768 is category 3, comparable to AES-192; ML-KEM-1024 is
    /// category 5, AES-256). Were ML-KEM broken, the curve's strength would
    /// remain (128 and 192).
    pub const fn security_bits(self) -> u16 {
        match self {
            HybridKem::MlKem768P256 => 192,
            HybridKem::MlKem1024P384 => 256,
        }
    }

    /// The ML-KEM size, recorded as the KEK's size: 768 or 1024.
    pub const fn bits(self) -> usize {
        match self {
            HybridKem::MlKem768P256 => 768,
            HybridKem::MlKem1024P384 => 1024,
        }
    }

    /// The KEM of a KEK size (768 or 1024).
    pub fn from_bits(bits: usize) -> Option<Self> {
        [HybridKem::MlKem768P256, HybridKem::MlKem1024P384]
            .into_iter()
            .find(|k| k.bits() == bits)
    }

    /// Bytes of a public key: the ML-KEM encapsulation key and the point.
    pub const fn public_key_len(self) -> usize {
        self.ml_kem().encapsulation_key_len() + self.curve().point_len()
    }

    /// Bytes of `enc`: the ML-KEM ciphertext and the ephemeral point.
    pub const fn enc_len(self) -> usize {
        self.ml_kem().ciphertext_len() + self.curve().point_len()
    }

    /// Bytes of the seed the EC scalar is sampled from (Group.Nseed).
    const fn ec_seed_len(self) -> usize {
        match self {
            HybridKem::MlKem768P256 => 128,
            HybridKem::MlKem1024P384 => 48,
        }
    }

    /// The name, as the combiner's label.
    const fn label(self) -> &'static str {
        match self {
            HybridKem::MlKem768P256 => "MLKEM768-P256",
            HybridKem::MlKem1024P384 => "MLKEM1024-P384",
        }
    }
}

impl fmt::Display for HybridKem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The PEM label of a hybrid private key document.
pub(crate) const PEM_LABEL: &str = "HPKE PRIVATE KEY";
const SEED_LEN: usize = 32;

#[derive(der::Sequence)]
struct PrivateDoc<'a> {
    version: u8,
    kem_id: u16,
    seed: &'a OctetStringRef,
    public_key: &'a OctetStringRef,
}

#[derive(der::Sequence)]
struct PublicDoc<'a> {
    kem_id: u16,
    public_key: &'a OctetStringRef,
}

fn invalid(reason: &'static str) -> Error {
    Error::InvalidKey {
        reason: reason.into(),
    }
}

/// The parts of a hybrid private key document: its KEM, its 32-byte seed
/// and its public key.
pub struct HybridPrivateParts<'a> {
    /// The KEM.
    pub kem: HybridKem,
    /// The seed (secret).
    pub seed: &'a [u8],
    /// The public key, `ek_PQ || ek_T`.
    pub public_key: &'a [u8],
}

impl fmt::Debug for HybridPrivateParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HybridPrivateParts")
            .field("kem", &self.kem)
            .field("seed", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Reads a hybrid private key document (DER, see the module docs).
///
/// # Errors
/// [`Error::InvalidKey`] for anything else, an unknown KEM, or lengths
/// that do not fit the KEM.
pub fn hybrid_private_parts(der: &[u8]) -> Result<HybridPrivateParts<'_>> {
    let doc = PrivateDoc::from_der(der).map_err(|_| invalid("not an HPKE private key"))?;
    if doc.version != 1 {
        return Err(invalid("unsupported HPKE private key version"));
    }
    let kem = HybridKem::from_kem_id(doc.kem_id).ok_or(invalid("unsupported hybrid KEM"))?;
    let seed = doc.seed.as_bytes();
    let public_key = doc.public_key.as_bytes();
    if seed.len() != SEED_LEN {
        return Err(invalid("a hybrid KEM seed is 32 bytes"));
    }
    if public_key.len() != kem.public_key_len() {
        return Err(invalid("the hybrid public key has the wrong length"));
    }
    check_point_form(
        kem.curve(),
        &public_key[kem.ml_kem().encapsulation_key_len()..],
    )?;
    Ok(HybridPrivateParts {
        kem,
        seed,
        public_key,
    })
}

/// The DER `HpkePublicKey` of a public key (what the key id hashes).
pub(crate) fn public_doc(kem: HybridKem, public_key: &[u8]) -> Result<Vec<u8>> {
    let doc = PublicDoc {
        kem_id: kem.kem_id(),
        public_key: OctetStringRef::new(public_key).map_err(|_| invalid("malformed key"))?,
    };
    doc.to_der().map_err(|_| invalid("malformed key"))
}

/// The KEM and public key of a DER `HpkePublicKey`.
pub(crate) fn public_parts(der: &[u8]) -> Result<(HybridKem, &[u8])> {
    let doc = PublicDoc::from_der(der).map_err(|_| invalid("not an HPKE public key"))?;
    let kem = HybridKem::from_kem_id(doc.kem_id).ok_or(invalid("unsupported hybrid KEM"))?;
    let pk = doc.public_key.as_bytes();
    if pk.len() != kem.public_key_len() {
        return Err(invalid("the hybrid public key has the wrong length"));
    }
    Ok((kem, pk))
}

/// A key expanded from its seed.
struct Expanded {
    ml_kem_seed: Zeroizing<Vec<u8>>,
    ek_pq: Vec<u8>,
    dk_t: Zeroizing<Vec<u8>>,
    ek_t: Vec<u8>,
}

/// RandomScalar: the first chunk of `seed` that is a valid scalar (0 < x <
/// n, big-endian), and its public point. No reduction, so no bias.
fn random_scalar<C: CipherSuite + ?Sized>(
    suite: &C,
    curve: Curve,
    seed: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>)> {
    let ec = ec_kek(suite)?;
    for chunk in seed.chunks_exact(curve.field_len()) {
        match ec.ec_public_key(curve, chunk) {
            Ok(point) => return Ok((Zeroizing::new(chunk.to_vec()), point)),
            Err(Error::InvalidKey { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Crypto {
        suite: "hybrid KEM",
        operation: "rejection sampling found no scalar",
    })
}

/// expandKey(seed): SHAKE256(seed) cut into the ML-KEM seed `d || z` (64
/// bytes) and the EC seed.
fn expand_key<C: CipherSuite + ?Sized>(suite: &C, kem: HybridKem, seed: &[u8]) -> Result<Expanded> {
    let mut full = Zeroizing::new(vec![0u8; 64 + kem.ec_seed_len()]);
    let pq = hybrid_kek(suite)?;
    pq.shake256(seed, &mut full)?;
    let ek_pq = pq.ml_kem_keygen(kem.ml_kem(), &full[..64])?;
    let (dk_t, ek_t) = random_scalar(suite, kem.curve(), &full[64..])?;
    Ok(Expanded {
        ml_kem_seed: Zeroizing::new(full[..64].to_vec()),
        ek_pq,
        dk_t,
        ek_t,
    })
}

/// DeriveKeyPair(ikm)'s seed: SHAKE256.LabeledDerive(ikm, "DeriveKeyPair",
/// "", 32) with the KEM's suite id.
pub fn derive_seed<C: CipherSuite + ?Sized>(
    suite: &C,
    kem: HybridKem,
    ikm: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let id = kem.kem_id().to_be_bytes();
    let label = b"DeriveKeyPair";
    let input = Zeroizing::new(
        [
            ikm,
            b"HPKE-v1",
            &[b'K', b'E', b'M', id[0], id[1]],
            &(label.len() as u16).to_be_bytes(),
            label,
            &(SEED_LEN as u16).to_be_bytes(),
        ]
        .concat(),
    );
    let mut seed = Zeroizing::new(vec![0u8; SEED_LEN]);
    hybrid_kek(suite)?.shake256(&input, &mut seed)?;
    Ok(seed)
}

/// The private key document of `seed` (its public key computed by the
/// suite).
///
/// # Errors
/// The suite's (a suite without ML-KEM says so).
pub fn private_key_der<C: CipherSuite + ?Sized>(
    suite: &C,
    kem: HybridKem,
    seed: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    if seed.len() != SEED_LEN {
        return Err(invalid("a hybrid KEM seed is 32 bytes"));
    }
    let key = expand_key(suite, kem, seed)?;
    let public_key = [&key.ek_pq[..], &key.ek_t].concat();
    let doc = PrivateDoc {
        version: 1,
        kem_id: kem.kem_id(),
        seed: OctetStringRef::new(seed).map_err(|_| invalid("malformed key"))?,
        public_key: OctetStringRef::new(&public_key).map_err(|_| invalid("malformed key"))?,
    };
    Ok(Zeroizing::new(
        doc.to_der().map_err(|_| invalid("malformed key"))?,
    ))
}

/// A new hybrid private key document, its seed from the OS CSPRNG.
///
/// # Errors
/// The suite's (a suite without ML-KEM says so).
pub fn generate<C: CipherSuite + ?Sized>(suite: &C, kem: HybridKem) -> Result<Zeroizing<Vec<u8>>> {
    let mut seed = Zeroizing::new([0u8; SEED_LEN]);
    suite.fill_random(&mut seed[..])?;
    private_key_der(suite, kem, &seed[..])
}

/// Checks that a hybrid private key document is one key pair: its public
/// key is the one its seed expands to.
///
/// # Errors
/// [`Error::InvalidKey`] if not.
pub fn check_key_pair<C: CipherSuite + ?Sized>(suite: &C, der: &[u8]) -> Result<()> {
    let parts = hybrid_private_parts(der)?;
    let key = expand_key(suite, parts.kem, parts.seed)?;
    let (ek_pq, ek_t) = parts
        .public_key
        .split_at(parts.kem.ml_kem().encapsulation_key_len());
    if key.ek_pq != ek_pq || key.ek_t != ek_t {
        return Err(invalid("the private key does not match its public key"));
    }
    Ok(())
}

/// The combiner: SHA3-256(ss_PQ || ss_T || ct_T || ek_T || label).
fn combine<C: CipherSuite + ?Sized>(
    suite: &C,
    kem: HybridKem,
    ss_pq: &[u8],
    ss_t: &[u8],
    ct_t: &[u8],
    ek_t: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let input = Zeroizing::new([ss_pq, ss_t, ct_t, ek_t, kem.label().as_bytes()].concat());
    Ok(Zeroizing::new(
        hybrid_kek(suite)?.sha3_256(&input)?.to_vec(),
    ))
}

/// Encap(pkR) with the randomness `ikm_e` (32 bytes for ML-KEM, then the
/// EC seed) or fresh randomness from the OS CSPRNG: `(enc, shared_secret)`.
fn encap<C: CipherSuite + ?Sized>(
    suite: &C,
    kem: HybridKem,
    pk_r: &[u8],
    ikm_e: Option<&[u8]>,
) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    if pk_r.len() != kem.public_key_len() {
        return Err(invalid("the hybrid public key has the wrong length"));
    }
    let (ek_pq, ek_t) = pk_r.split_at(kem.ml_kem().encapsulation_key_len());
    check_point_form(kem.curve(), ek_t)?;
    let fresh;
    let randomness = match ikm_e {
        Some(r) => r,
        None => {
            fresh = {
                let mut r = Zeroizing::new(vec![0u8; 32 + kem.ec_seed_len()]);
                suite.fill_random(&mut r)?;
                r
            };
            &fresh[..]
        }
    };
    if randomness.len() < 32 + kem.curve().field_len() {
        return Err(invalid("too little encapsulation randomness"));
    }
    let (ct_pq, ss_pq) =
        hybrid_kek(suite)?.ml_kem_encaps(kem.ml_kem(), ek_pq, &randomness[..32])?;
    let (sk_e, ct_t) = random_scalar(suite, kem.curve(), &randomness[32..])?;
    let ephemeral = ec_pkcs8_der(kem.curve(), &sk_e, &ct_t)?;
    let ss_t = ec_kek(suite)?.ecdh(&ephemeral, ek_t)?;
    let ss = combine(suite, kem, &ss_pq, &ss_t, &ct_t, ek_t)?;
    Ok(([ct_pq, ct_t].concat(), ss))
}

/// Decap(enc, skR) with the seed of the private key.
fn decap<C: CipherSuite + ?Sized>(
    suite: &C,
    kem: HybridKem,
    seed: &[u8],
    enc: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    if enc.len() != kem.enc_len() {
        return Err(invalid("the hybrid ciphertext has the wrong length"));
    }
    let (ct_pq, ct_t) = enc.split_at(kem.ml_kem().ciphertext_len());
    check_point_form(kem.curve(), ct_t)?;
    let key = expand_key(suite, kem, seed)?;
    let ss_pq = hybrid_kek(suite)?.ml_kem_decaps(kem.ml_kem(), &key.ml_kem_seed, ct_pq)?;
    let private = ec_pkcs8_der(kem.curve(), &key.dk_t, &key.ek_t)?;
    let ss_t = ec_kek(suite)?.ecdh(&private, ct_t)?;
    combine(suite, kem, &ss_pq, &ss_t, ct_t, &key.ek_t)
}

/// SetupBaseS(pkR, info) for a hybrid ciphersuite `cs`: `enc` and the
/// sender's context. `ikm_e` fixes the randomness (known-answer tests
/// only).
///
/// # Errors
/// [`Error::InvalidKey`] for a malformed public key; the suite's.
pub fn setup_sender<C: CipherSuite + ?Sized>(
    suite: &C,
    cs: Ciphersuite,
    pk_r: &[u8],
    info: &[u8],
    ikm_e: Option<&[u8]>,
) -> Result<(Vec<u8>, Context)> {
    let crate::hpke::Kem::Hybrid(kem) = cs.kem else {
        return Err(invalid("not a hybrid ciphersuite"));
    };
    let (enc, ss) = encap(suite, kem, pk_r, ikm_e)?;
    Ok((enc, Context::schedule(suite, cs, &ss, info)?))
}

/// SetupBaseR(enc, skR, info) for a hybrid ciphersuite, with the private
/// key's 32-byte seed.
///
/// # Errors
/// [`Error::InvalidKey`] for an `enc` of the wrong form; the suite's.
pub fn setup_receiver<C: CipherSuite + ?Sized>(
    suite: &C,
    cs: Ciphersuite,
    seed: &[u8],
    enc: &[u8],
    info: &[u8],
) -> Result<Context> {
    let crate::hpke::Kem::Hybrid(kem) = cs.kem else {
        return Err(invalid("not a hybrid ciphersuite"));
    };
    let ss = decap(suite, kem, seed, enc)?;
    Context::schedule(suite, cs, &ss, info)
}
