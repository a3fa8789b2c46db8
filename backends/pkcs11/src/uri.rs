//! PKCS#11 URIs (RFC 7512), the part a seal needs: which token, which key
//! object, which module, and where the PIN comes from.

use std::fmt;
use std::path::PathBuf;

use keyserver_core::{Error, Result};
use zeroize::Zeroizing;

/// The environment variable a PIN may come from when the URI names no
/// `pin-source`.
pub const PIN_ENV: &str = "KEYSERVER_PKCS11_PIN";
/// The environment variable naming the module when the URI has no
/// `module-path`.
pub const MODULE_ENV: &str = "KEYSERVER_PKCS11_MODULE";

/// A parsed `pkcs11:` URI, such as
/// `pkcs11:token=keyserver;object=master-1?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/keyserver/pin`.
///
/// Path attributes `token` (the token label) and `object` (the key label)
/// are required; `serial` and `manufacturer` narrow the token. Query
/// attributes: `module-path` (or [`MODULE_ENV`]), `pin-source` (a file,
/// `file:PATH` or a plain path; or [`PIN_ENV`]). A `pin-value` is refused:
/// a PIN on a command line is visible to every user of the machine.
///
/// ```
/// use keyserver_pkcs11::Pkcs11Uri;
/// let uri: Pkcs11Uri = "pkcs11:token=ks;object=master%201?module-path=/m.so&pin-source=file:/p"
///     .parse()?;
/// assert_eq!(uri.token, "ks");
/// assert_eq!(uri.object, "master 1");
/// assert!("pkcs11:token=ks;object=m?pin-value=1234".parse::<Pkcs11Uri>().is_err());
/// # Ok::<(), keyserver::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// The token's label (`token=`).
    pub token: String,
    /// The key object's label (`object=`).
    pub object: String,
    /// The token's serial number (`serial=`), if given.
    pub serial: Option<String>,
    /// The token's manufacturer (`manufacturer=`), if given.
    pub manufacturer: Option<String>,
    /// The key object's `CKA_ID` (`id=`, percent-encoded bytes), if given:
    /// it picks one key among several of the same label.
    pub id: Option<Vec<u8>>,
    /// The module to load (`module-path=`), if given.
    pub module_path: Option<PathBuf>,
    /// Where the PIN is read from (`pin-source=`), if given.
    pub pin_source: Option<PathBuf>,
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No PIN is ever part of it.
        write!(f, "pkcs11:token={};object={}", self.token, self.object)
    }
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidKey {
        reason: format!("PKCS#11 URI: {}", reason.into()).into(),
    }
}

/// RFC 3986 percent-decoding of one attribute value, as text.
fn decode(value: &str) -> Result<String> {
    String::from_utf8(decode_bytes(value)?).map_err(|_| invalid("an attribute that is not UTF-8"))
}

/// RFC 3986 percent-decoding of one attribute value, as bytes.
fn decode_bytes(value: &str) -> Result<Vec<u8>> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid("a '%' not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

impl std::str::FromStr for Pkcs11Uri {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let rest = text
            .strip_prefix("pkcs11:")
            .ok_or_else(|| invalid("it must start with \"pkcs11:\""))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri {
            token: String::new(),
            object: String::new(),
            serial: None,
            manufacturer: None,
            id: None,
            module_path: None,
            pin_source: None,
        };
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| invalid(format!("attribute {attr:?} has no '='")))?;
            if name == "id" {
                uri.id = Some(decode_bytes(value)?);
                continue;
            }
            let value = decode(value)?;
            match name {
                "token" => uri.token = value,
                "object" => uri.object = value,
                "serial" => uri.serial = Some(value),
                "manufacturer" => uri.manufacturer = Some(value),
                // Narrowing attributes a seal has no use for are allowed.
                "type"
                | "model"
                | "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer"
                | "id" => {}
                other => return Err(invalid(format!("unknown attribute {other:?}"))),
            }
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| invalid(format!("query attribute {attr:?} has no '='")))?;
            match name {
                "module-path" => uri.module_path = Some(PathBuf::from(decode(value)?)),
                "pin-source" => {
                    let value = decode(value)?;
                    let path = value.strip_prefix("file:").unwrap_or(&value);
                    uri.pin_source = Some(PathBuf::from(path));
                }
                "pin-value" => {
                    return Err(invalid(
                        "pin-value is refused (a PIN on a command line is visible to every \
                         user): use pin-source=file:PATH or the KEYSERVER_PKCS11_PIN variable",
                    ))
                }
                "module-name" => {}
                other => return Err(invalid(format!("unknown query attribute {other:?}"))),
            }
        }
        if uri.token.is_empty() {
            return Err(invalid("the token is missing (token=LABEL)"));
        }
        if uri.object.is_empty() {
            return Err(invalid("the key is missing (object=LABEL)"));
        }
        Ok(uri)
    }
}

impl Pkcs11Uri {
    /// The module to load: `module-path`, or [`MODULE_ENV`].
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if neither names one.
    pub fn module(&self) -> Result<PathBuf> {
        if let Some(path) = &self.module_path {
            return Ok(path.clone());
        }
        std::env::var_os(MODULE_ENV)
            .map(PathBuf::from)
            .ok_or_else(|| {
                invalid(format!(
                    "no module: add module-path=/path/to/module.so or set {MODULE_ENV}"
                ))
            })
    }

    /// The user PIN: the first line of `pin-source`'s file (which must
    /// not be readable by others), or [`PIN_ENV`].
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if there is none, or the file cannot be read
    /// or is readable by others.
    pub fn pin(&self) -> Result<Zeroizing<String>> {
        match &self.pin_source {
            Some(path) => {
                use std::io::Read;
                use std::os::unix::fs::PermissionsExt;
                let shown = path.display();
                let mut file = std::fs::File::open(path)
                    .map_err(|e| invalid(format!("cannot read the PIN file {shown}: {e}")))?;
                let mode = file
                    .metadata()
                    .map_err(|e| invalid(format!("cannot read the PIN file {shown}: {e}")))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(invalid(format!(
                        "the PIN file {shown} is readable by others: chmod 600 {shown}"
                    )));
                }
                // Sized once: a growing buffer would leave unwiped copies.
                let mut text = Zeroizing::new(String::with_capacity(4097));
                (&mut file)
                    .take(4096)
                    .read_to_string(&mut text)
                    .map_err(|e| invalid(format!("cannot read the PIN file {shown}: {e}")))?;
                let pin = text.lines().next().unwrap_or("").trim_end_matches('\r');
                Ok(Zeroizing::new(pin.to_string()))
            }
            None => std::env::var(PIN_ENV).map(Zeroizing::new).map_err(|_| {
                invalid(format!(
                    "no PIN: add pin-source=file:PATH (a file only its owner reads) or set {PIN_ENV}"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_and_refuse_what_they_must() {
        let uri: Pkcs11Uri = "pkcs11:token=keyserver;object=master-1;serial=abc;type=secret-key\
                              ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/pin"
            .parse()
            .unwrap();
        assert_eq!(uri.token, "keyserver");
        assert_eq!(uri.object, "master-1");
        assert_eq!(uri.serial.as_deref(), Some("abc"));
        assert_eq!(
            uri.module_path.as_deref(),
            Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(
            uri.pin_source.as_deref(),
            Some(std::path::Path::new("/run/pin"))
        );
        assert_eq!(uri.to_string(), "pkcs11:token=keyserver;object=master-1");
        for bad in [
            "token=a;object=b",
            "pkcs11:object=b",
            "pkcs11:token=a",
            "pkcs11:token=a;object=b?pin-value=1234",
            "pkcs11:token=a;object=b;colour=red",
            "pkcs11:token=a%2;object=b",
            "pkcs11:token=a;object=b?x",
        ] {
            let err = bad.parse::<Pkcs11Uri>().unwrap_err().to_string();
            assert!(!err.contains("1234"), "{err}");
        }
        let spaced: Pkcs11Uri = "pkcs11:token=my%20token;object=k;id=%01%ff"
            .parse()
            .unwrap();
        assert_eq!(spaced.token, "my token");
        assert_eq!(spaced.id.as_deref(), Some(&[1u8, 255][..]));
    }

    /// Hostile URIs, 20,000 of them from a fixed seed over the characters
    /// that matter: each parses or gives a typed error, never a panic.
    #[test]
    fn any_uri_parses_or_is_refused() {
        let alphabet: Vec<char> = "pkcs11:tokenobjid=;?&%0aZ/\u{e9}-_. ".chars().collect();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 48) as usize;
            let mut text = String::from(if next() % 2 == 0 { "pkcs11:" } else { "" });
            for _ in 0..len {
                text.push(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            if let Ok(uri) = text.parse::<Pkcs11Uri>() {
                assert!(!uri.token.is_empty() && !uri.object.is_empty(), "{text:?}");
            }
        }
    }

    #[test]
    fn a_pin_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "123456\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let uri: Pkcs11Uri = format!("pkcs11:token=t;object=o?pin-source=file:{}", path.display())
            .parse()
            .unwrap();
        let err = uri.pin().unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("123456"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(uri.pin().unwrap().as_str(), "123456");
    }
}
