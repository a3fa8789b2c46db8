//! Elliptic-curve keys: the NIST curves a KEK may use ([`Curve`]) and the
//! one parser of their PKCS#8 and SubjectPublicKeyInfo encodings, shared by
//! the core and by every cipher suite (so no suite can read a key
//! differently).

use std::fmt;

use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier};
use der::{Decode, Encode};
use pkcs8::PrivateKeyInfoRef;
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

use crate::{Error, Result, Strength};

/// `id-ecPublicKey` (RFC 5480): the algorithm of every EC key.
pub(crate) const EC_PUBLIC_KEY_OID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const P521_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// A NIST prime curve (FIPS 186-5, SP 800-186) for elliptic-curve KEKs, one
/// per strength (SP 800-57 Part 1 Table 2).
///
/// | strength | curve | HPKE KEM (RFC 9180) |
/// | --- | --- | --- |
/// | 128 | P-256 | DHKEM(P-256, HKDF-SHA256) |
/// | 192 | P-384 | DHKEM(P-384, HKDF-SHA384) |
/// | 256 | P-521 | DHKEM(P-521, HKDF-SHA512) |
///
/// ```
/// use keyserver::{Curve, Strength};
///
/// assert_eq!(Curve::for_strength(Strength::S256), Curve::P521);
/// assert_eq!(Curve::P384.security_bits(), 192);
/// assert_eq!(Curve::P521.point_len(), 133);
/// assert_eq!(Curve::P256.to_string(), "P-256");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Curve {
    /// NIST P-256 (secp256r1), 128-bit security.
    P256,
    /// NIST P-384 (secp384r1), 192-bit security.
    P384,
    /// NIST P-521 (secp521r1), 256-bit security.
    P521,
}

impl Curve {
    /// All curves, weakest first.
    pub const ALL: [Curve; 3] = [Curve::P256, Curve::P384, Curve::P521];

    /// The curve of a KEK of `strength`.
    pub const fn for_strength(strength: Strength) -> Curve {
        match strength {
            Strength::S128 => Curve::P256,
            Strength::S192 => Curve::P384,
            Strength::S256 => Curve::P521,
        }
    }

    /// The size of the curve's field in bits: 256, 384 or 521.
    pub const fn bits(self) -> usize {
        match self {
            Curve::P256 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }

    /// Bytes of a scalar or a coordinate: 32, 48 or 66.
    pub const fn field_len(self) -> usize {
        self.bits().div_ceil(8)
    }

    /// Bytes of an uncompressed point (`04 || x || y`): 65, 97 or 133.
    pub const fn point_len(self) -> usize {
        1 + 2 * self.field_len()
    }

    /// The security strength in bits (SP 800-57 Part 1 Table 2).
    pub const fn security_bits(self) -> u16 {
        match self {
            Curve::P256 => 128,
            Curve::P384 => 192,
            Curve::P521 => 256,
        }
    }

    /// The curve of a field size in bits (256, 384 or 521).
    pub fn from_bits(bits: usize) -> Option<Curve> {
        Curve::ALL.into_iter().find(|c| c.bits() == bits)
    }

    /// The named-curve object identifier (RFC 5480).
    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => P256_OID,
            Curve::P384 => P384_OID,
            Curve::P521 => P521_OID,
        }
    }

    fn from_oid(oid: &ObjectIdentifier) -> Option<Curve> {
        Curve::ALL.into_iter().find(|c| c.oid() == *oid)
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        })
    }
}

/// The parts of an EC private key in PKCS#8 (RFC 5208 wrapping an RFC 5915
/// ECPrivateKey): its curve, its private scalar and its public point.
///
/// Returned by [`ec_private_parts`]; the scalar is secret and borrows the
/// caller's (zeroizing) buffer.
#[derive(Clone, Copy)]
pub struct EcPrivateParts<'a> {
    /// The curve.
    pub curve: Curve,
    /// The private scalar, big-endian, exactly [`Curve::field_len`] bytes.
    pub scalar: &'a [u8],
    /// The public point, uncompressed, exactly [`Curve::point_len`] bytes.
    pub point: &'a [u8],
}

impl fmt::Debug for EcPrivateParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcPrivateParts")
            .field("curve", &self.curve)
            .field("scalar", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn invalid(reason: &'static str) -> Error {
    Error::InvalidKey {
        reason: reason.into(),
    }
}

/// The curve named by an AlgorithmIdentifier's parameters, if any.
fn named_curve(parameters: Option<AnyRef<'_>>) -> Result<Option<Curve>> {
    let Some(any) = parameters else {
        return Ok(None);
    };
    let oid: ObjectIdentifier = any
        .decode_as()
        .map_err(|_| invalid("EC parameters are not a named curve"))?;
    Curve::from_oid(&oid)
        .map(Some)
        .ok_or(invalid("unsupported curve (P-256, P-384 and P-521 are)"))
}

/// Checks the form of an uncompressed point of `curve`: its length and its
/// `04` prefix. Whether it lies on the curve is the suite's check, made
/// when it uses the point.
pub fn check_point_form(curve: Curve, point: &[u8]) -> Result<()> {
    if point.len() != curve.point_len() || point.first() != Some(&4) {
        return Err(invalid(
            "an EC public key is an uncompressed point of its curve",
        ));
    }
    Ok(())
}

/// The curve, private scalar and public point of an EC private key given as
/// unencrypted PKCS#8 DER: the one parser the core and the cipher suites
/// share. The public point must be present (OpenSSL and the RustCrypto
/// crates always write it); its consistency with the scalar is the suite's
/// check ([`EcKek::ec_check_key_pair`](crate::crypto::EcKek::ec_check_key_pair)).
///
/// # Errors
/// [`Error::InvalidKey`] if it is not an EC key of P-256, P-384 or P-521,
/// the scalar has the wrong length, or the public point is missing or
/// malformed.
///
/// ```
/// # fn main() -> keyserver::Result<()> {
/// let pem = std::fs::read_to_string(
///     concat!(env!("CARGO_MANIFEST_DIR"), "/../testing/fixtures/kek-p256.pem")).unwrap();
/// let kek = keyserver::Kek::from_pem(&pem)?;
/// let parts = keyserver::plugin::ec_private_parts(kek.pkcs8_der())?;
/// assert_eq!(parts.curve, keyserver::Curve::P256);
/// assert_eq!((parts.scalar.len(), parts.point.len()), (32, 65));
/// # Ok(()) }
/// ```
pub fn ec_private_parts(pkcs8_der: &[u8]) -> Result<EcPrivateParts<'_>> {
    let info =
        PrivateKeyInfoRef::from_der(pkcs8_der).map_err(|_| invalid("not a PKCS#8 private key"))?;
    if info.algorithm.oid != EC_PUBLIC_KEY_OID {
        return Err(invalid("not an EC key"));
    }
    let outer = named_curve(info.algorithm.parameters)?;
    let key = sec1::EcPrivateKey::from_der(info.private_key.as_bytes())
        .map_err(|_| invalid("malformed EC private key"))?;
    let inner = match key.parameters {
        Some(params) => Some(
            params
                .named_curve()
                .and_then(|oid| Curve::from_oid(&oid))
                .ok_or(invalid("unsupported curve (P-256, P-384 and P-521 are)"))?,
        ),
        None => None,
    };
    let curve = match (outer, inner) {
        (Some(a), Some(b)) if a != b => return Err(invalid("the EC key names two curves")),
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => return Err(invalid("the EC key names no curve")),
    };
    if key.private_key.len() != curve.field_len() {
        return Err(invalid("the EC private scalar has the wrong length"));
    }
    let point = key.public_key.ok_or(invalid(
        "the EC private key does not include its public key",
    ))?;
    check_point_form(curve, point)?;
    Ok(EcPrivateParts {
        curve,
        scalar: key.private_key,
        point,
    })
}

/// The curve and uncompressed public point of an EC public key given as DER
/// SubjectPublicKeyInfo.
///
/// # Errors
/// [`Error::InvalidKey`] if it is not an EC public key of a supported curve
/// in uncompressed form.
pub fn ec_public_point(spki_der: &[u8]) -> Result<(Curve, &[u8])> {
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|_| invalid("not a DER SubjectPublicKeyInfo"))?;
    if spki.algorithm.oid != EC_PUBLIC_KEY_OID {
        return Err(invalid("not an EC public key"));
    }
    let curve =
        named_curve(spki.algorithm.parameters)?.ok_or(invalid("the EC key names no curve"))?;
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or(invalid("malformed EC public key"))?;
    check_point_form(curve, point)?;
    Ok((curve, point))
}

/// DER SubjectPublicKeyInfo of an EC public point (id-ecPublicKey with the
/// named curve, the point uncompressed): byte-identical to
/// `openssl pkey -pubout -outform DER`.
pub(crate) fn ec_spki_der(curve: Curve, point: &[u8]) -> Result<Vec<u8>> {
    let oid = curve.oid();
    let spki = SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: EC_PUBLIC_KEY_OID,
            parameters: Some(AnyRef::from(&oid)),
        },
        subject_public_key: BitStringRef::from_bytes(point)
            .map_err(|_| invalid("malformed EC public key"))?,
    };
    spki.to_der()
        .map_err(|_| invalid("malformed EC public key"))
}

/// Unencrypted PKCS#8 DER of an EC key from its scalar and public point
/// (the curve in the AlgorithmIdentifier, the point in the ECPrivateKey):
/// how a suite that works with raw scalars hands a key to the core, and how
/// the known-answer tests build their fixed ephemeral keys.
///
/// # Errors
/// [`Error::InvalidKey`] for a scalar or point of the wrong length or form.
pub fn ec_pkcs8_der(
    curve: Curve,
    scalar: &[u8],
    point: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    if scalar.len() != curve.field_len() {
        return Err(invalid("the EC private scalar has the wrong length"));
    }
    check_point_form(curve, point)?;
    let ec = sec1::EcPrivateKey {
        private_key: scalar,
        parameters: None,
        public_key: Some(point),
    };
    let ec_der = zeroize::Zeroizing::new(ec.to_der().map_err(|_| invalid("malformed EC key"))?);
    let oid = curve.oid();
    let info = PrivateKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: EC_PUBLIC_KEY_OID,
            parameters: Some(AnyRef::from(&oid)),
        },
        private_key: der::asn1::OctetStringRef::new(&ec_der)
            .map_err(|_| invalid("malformed EC key"))?,
        public_key: None,
    };
    Ok(zeroize::Zeroizing::new(
        info.to_der().map_err(|_| invalid("malformed EC key"))?,
    ))
}
