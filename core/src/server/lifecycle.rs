//! Key lifecycle (NIST SP 800-57 Part 1 §7): the states a key goes
//! through, what each allows, and the metadata a storage keeps beside the
//! create-only record (`docs/LIFECYCLE.md`).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Error, KeyId, Result, Strength};

// The table of states is in `KeyState`'s documentation and docs/LIFECYCLE.md.

/// Default cryptoperiod: an active key older than this is deactivated (two
/// years, SP 800-57's upper bound for the originator-usage period of a
/// symmetric data-encryption key).
pub const DEFAULT_CRYPTOPERIOD: Duration = Duration::from_secs(2 * 365 * 86_400);
/// Default time between `destroy` and the destruction: 7 days.
pub const DEFAULT_DESTROY_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// Where a key is in its life.
///
/// | state | `get_key`, `get_wrapped` | encrypt new data | next states |
/// | --- | --- | --- | --- |
/// | `active` | yes | yes | deactivated, suspended, compromised, destroy-pending |
/// | `deactivated` | yes | no | suspended, compromised, destroy-pending |
/// | `suspended` | no | no | (resume) the state before, compromised, destroy-pending |
/// | `compromised` | yes, logged as a warning | no | destroy-pending |
/// | `destroy-pending` | no | no | (cancel) the state before, destroyed (at `destroy_at`) |
/// | `destroyed` | no: the wrapped DEK is gone | no | none |
///
/// ```
/// use keyserver::KeyState;
/// assert!(KeyState::Deactivated.allows_decrypt());
/// assert!(!KeyState::Deactivated.allows_encrypt());
/// assert_eq!("destroy-pending".parse::<KeyState>()?, KeyState::DestroyPending);
/// # Ok::<(), keyserver::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum KeyState {
    /// In use: data may be encrypted and decrypted.
    Active,
    /// Past its use for new data (rotated, or past its cryptoperiod): old
    /// data can still be decrypted.
    Deactivated,
    /// Nothing until resumed.
    Suspended,
    /// Believed known to someone else: old data can still be decrypted (to
    /// re-encrypt it elsewhere), each use logged as a warning.
    Compromised,
    /// To be destroyed at its `destroy_at`; nothing until then, and the
    /// destruction can be cancelled.
    DestroyPending,
    /// The wrapped DEK is gone for good; a tombstone remains.
    Destroyed,
}

impl KeyState {
    /// Every state.
    pub const ALL: [KeyState; 6] = [
        KeyState::Active,
        KeyState::Deactivated,
        KeyState::Suspended,
        KeyState::Compromised,
        KeyState::DestroyPending,
        KeyState::Destroyed,
    ];

    /// The name on the wire and in the docs.
    pub const fn name(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Deactivated => "deactivated",
            KeyState::Suspended => "suspended",
            KeyState::Compromised => "compromised",
            KeyState::DestroyPending => "destroy-pending",
            KeyState::Destroyed => "destroyed",
        }
    }

    /// Whether the DEK may be handed out (to decrypt data).
    pub const fn allows_decrypt(self) -> bool {
        matches!(
            self,
            KeyState::Active | KeyState::Deactivated | KeyState::Compromised
        )
    }

    /// Whether new data may be encrypted under the key.
    pub const fn allows_encrypt(self) -> bool {
        matches!(self, KeyState::Active)
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        KeyState::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| Error::InvalidKey {
                reason: format!("not a key state: {s:?}").into(),
            })
    }
}

/// What a storage keeps about a key beside its record: its state, owner
/// and times. A record without metadata (written before lifecycle existed,
/// or by a server without access control) is an active key of no owner.
///
/// ```
/// use keyserver::{KeyId, KeyMeta, KeyState, Strength};
///
/// let meta = KeyMeta::new(KeyId::from_bytes([1; 32]), Strength::S128, 1_700_000_000, Some("app".into()));
/// assert_eq!(meta.state, KeyState::Active);
/// let bytes = meta.encode();
/// assert_eq!(KeyMeta::decode(&bytes, &meta.key_id)?, meta);
/// # Ok::<(), keyserver::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyMeta {
    /// The key.
    pub key_id: KeyId,
    /// Its state as stored (see [`KeyMeta::state_at`] for the state in
    /// force, which also follows the cryptoperiod and the destruction
    /// time).
    pub state: KeyState,
    /// Its strength.
    pub strength: Strength,
    /// When it was made, in Unix seconds.
    pub created: u64,
    /// The principal that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When the state last changed, in Unix seconds.
    #[serde(default)]
    pub changed: u64,
    /// The state to go back to on `resume` or `cancel_destroy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<KeyState>,
    /// When a destroy-pending key is destroyed, in Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_at: Option<u64>,
    /// The key whose record wraps the same DEK, made by `rotate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_to: Option<KeyId>,
    /// The key this one was rotated from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_from: Option<KeyId>,
    /// When the DEK was made, if before `created` (a rotated key wraps its
    /// predecessor's DEK): the cryptoperiod runs from it, so rotating does
    /// not extend a DEK's use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dek_created: Option<u64>,
}

impl KeyMeta {
    /// An active key's metadata.
    pub fn new(key_id: KeyId, strength: Strength, created: u64, owner: Option<String>) -> Self {
        KeyMeta {
            key_id,
            state: KeyState::Active,
            strength,
            created,
            owner,
            changed: created,
            previous: None,
            destroy_at: None,
            rotated_to: None,
            rotated_from: None,
            dek_created: None,
        }
    }

    /// The state in force at `now` (Unix seconds) under `cryptoperiod`: an
    /// active key past it is deactivated; a destroy-pending key past its
    /// `destroy_at` is destroyed.
    pub fn state_at(&self, now: u64, cryptoperiod: Duration) -> KeyState {
        match self.state {
            KeyState::Active if now >= self.deactivate_at(cryptoperiod) => KeyState::Deactivated,
            KeyState::DestroyPending if self.destroy_at.is_some_and(|t| now >= t) => {
                KeyState::Destroyed
            }
            state => state,
        }
    }

    /// When an active key is deactivated by its cryptoperiod (counted
    /// from its DEK's creation).
    pub fn deactivate_at(&self, cryptoperiod: Duration) -> u64 {
        self.dek_created
            .unwrap_or(self.created)
            .saturating_add(cryptoperiod.as_secs())
    }

    /// The stored form: JSON with a SHA-256 over it, so that damage is
    /// found (docs/FORMAT.md).
    pub fn encode(&self) -> Vec<u8> {
        use sha2::Digest;
        let body =
            serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("metadata always serialises"));
        let sum = hex::encode(sha2::Sha256::digest(&body));
        let mut out = body;
        out.push(b'\n');
        out.extend_from_slice(sum.as_bytes());
        out.push(b'\n');
        out
    }

    /// The metadata of `key_id` from its stored form.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`] naming the key if the bytes are damaged or
    /// belong to another key.
    pub fn decode(bytes: &[u8], key_id: &KeyId) -> Result<Self> {
        use sha2::Digest;
        let corrupt = |reason: &str| Error::CorruptRecord {
            key_id: *key_id,
            reason: format!("key metadata: {reason}").into(),
        };
        let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8"))?;
        let (body, sum) = text
            .trim_end_matches('\n')
            .rsplit_once('\n')
            .ok_or_else(|| corrupt("no checksum"))?;
        if hex::encode(sha2::Sha256::digest(body.as_bytes())) != sum {
            return Err(corrupt("checksum mismatch"));
        }
        let meta: KeyMeta = serde_json::from_slice(body.as_bytes())
            .map_err(|e| corrupt(&format!("unreadable: {e}")))?;
        if meta.key_id != *key_id {
            return Err(corrupt("it belongs to another key"));
        }
        Ok(meta)
    }
}

/// Now, in Unix seconds.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `secs` since the Unix epoch as RFC 3339 UTC with `micros`:
/// `2026-11-29T15:04:05.123456Z`.
#[cfg_attr(not(feature = "policy"), allow(dead_code))]
pub(crate) fn rfc3339_micros(secs: u64, micros: u32) -> String {
    let (date, time) = civil(secs);
    format!("{date}T{time}.{micros:06}Z")
}

/// `secs` since the Unix epoch as RFC 3339 UTC: `2026-11-29T15:04:05Z`.
///
/// ```
/// # use keyserver::api::rfc3339;
/// assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
/// assert_eq!(keyserver::api::parse_rfc3339("2026-11-29T15:04:05Z"), Some(1_795_964_645));
/// ```
pub fn rfc3339(secs: u64) -> String {
    let (date, time) = civil(secs);
    format!("{date}T{time}Z")
}

fn civil(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar,
    // by eras of 400 years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

/// Unix seconds of an RFC 3339 UTC time as [`rfc3339`] writes it (a
/// fraction of a second is allowed and dropped); `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &text[19..];
    let rest = match rest.strip_prefix('.') {
        Some(frac) => frac.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    if rest != "Z"
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from civil (the inverse of `civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// What `describe` says of a key: its [`KeyMeta`] as the wire shows it,
/// with the state in force now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The key.
    pub key_id: KeyId,
    /// Its state in force.
    pub state: KeyState,
    /// Its strength.
    pub strength: Strength,
    /// When it was made (Unix seconds).
    pub created: u64,
    /// The principal that made it, if known.
    pub owner: Option<String>,
    /// When an active key is deactivated by its cryptoperiod.
    pub deactivate_at: Option<u64>,
    /// When a destroy-pending key will be (or a destroyed key was)
    /// destroyed.
    pub destroy_at: Option<u64>,
    /// The key it was rotated to.
    pub rotated_to: Option<KeyId>,
    /// The key it was rotated from (whose data it decrypts).
    pub rotated_from: Option<KeyId>,
    /// The KEK's algorithm, from its stored record (`describe` says it
    /// while the record exists; `None` for a destroyed key and in
    /// `list_keys`, which reads only metadata).
    pub kek_alg: Option<crate::KekAlg>,
}

impl KeyInfo {
    /// What `meta` says at `now` under `cryptoperiod`.
    pub fn of(meta: &KeyMeta, now: u64, cryptoperiod: Duration) -> Self {
        let state = meta.state_at(now, cryptoperiod);
        KeyInfo {
            key_id: meta.key_id,
            state,
            strength: meta.strength,
            created: meta.created,
            owner: meta.owner.clone(),
            deactivate_at: (state == KeyState::Active).then(|| meta.deactivate_at(cryptoperiod)),
            destroy_at: meta.destroy_at,
            rotated_to: meta.rotated_to,
            rotated_from: meta.rotated_from,
            kek_alg: None,
        }
    }
}

/// A page of `list_keys`, and where the next one starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPage {
    /// The keys, in key id order.
    pub keys: Vec<KeyInfo>,
    /// Pass it as the filter's `cursor` for the next page; `None`: this was
    /// the last.
    pub cursor: Option<KeyId>,
}

impl KeyPage {
    /// A page of `keys`, followed by the page after `cursor`.
    pub fn new(keys: Vec<KeyInfo>, cursor: Option<KeyId>) -> Self {
        KeyPage { keys, cursor }
    }
}

/// Which keys `list_keys` returns.
///
/// ```
/// use keyserver::{KeyFilter, KeyState};
/// let filter = KeyFilter { state: Some(KeyState::Active), ..KeyFilter::default() };
/// assert!(filter.owner.is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyFilter {
    /// Only keys in this state (in force now).
    pub state: Option<KeyState>,
    /// Only keys this principal made.
    pub owner: Option<String>,
    /// Only keys made longer ago than the cryptoperiod.
    pub past_cryptoperiod: bool,
    /// Start after this key id (the previous page's cursor).
    pub cursor: Option<KeyId>,
    /// At most this many keys (the server caps it at [`MAX_PAGE`]).
    pub limit: Option<u32>,
}

/// Most keys in one `list_keys` page.
pub const MAX_PAGE: u32 = 1000;

/// A state change, by its wire method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Change {
    /// `suspend`: nothing until resumed.
    Suspend,
    /// `resume`: back to the state before `suspend`.
    Resume,
    /// `compromised`: decrypt only, every use logged as a warning.
    Compromised,
    /// `destroy`: destroy-pending until the destruction time.
    Destroy,
    /// `cancel_destroy`: back to the state before `destroy`.
    CancelDestroy,
}

impl Change {
    /// Every change.
    pub const ALL: [Change; 5] = [
        Change::Suspend,
        Change::Resume,
        Change::Compromised,
        Change::Destroy,
        Change::CancelDestroy,
    ];

    /// Its wire method's name.
    pub const fn name(self) -> &'static str {
        match self {
            Change::Suspend => "suspend",
            Change::Resume => "resume",
            Change::Compromised => "compromised",
            Change::Destroy => "destroy",
            Change::CancelDestroy => "cancel_destroy",
        }
    }

    /// Whether it takes a key (further) out of use: `suspend`,
    /// `compromised`, `destroy`. The holder of a KEK may always make these
    /// to its own key; undoing them needs the grant.
    pub const fn restricts(self) -> bool {
        matches!(
            self,
            Change::Suspend | Change::Compromised | Change::Destroy
        )
    }

    /// The state after this change from `from`, or `None` if `from` does
    /// not allow it (the table in [`KeyState`]). `previous` is the state
    /// to go back to for `resume` and `cancel_destroy`.
    pub fn apply(self, from: KeyState, previous: Option<KeyState>) -> Option<KeyState> {
        use KeyState::*;
        match (self, from) {
            (Change::Suspend, Active | Deactivated) => Some(Suspended),
            (Change::Resume, Suspended) => Some(previous.unwrap_or(Active)),
            (Change::Compromised, Active | Deactivated | Suspended) => Some(Compromised),
            (Change::Destroy, Active | Deactivated | Suspended | Compromised) => {
                Some(DestroyPending)
            }
            (Change::CancelDestroy, DestroyPending) => Some(previous.unwrap_or(Active)),
            _ => None,
        }
    }
}

/// The key a state change is about: the KEK itself (proof of possession:
/// its holder may always change its own key), or a key id (for operators
/// granted the method).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The KEK (PEM on the wire).
    Kek(crate::Kek),
    /// A key id (64 hex digits on the wire).
    KeyId(KeyId),
}

impl Target {
    /// The key id of the target.
    pub fn key_id(&self) -> KeyId {
        match self {
            Target::Kek(kek) => kek.id(),
            Target::KeyId(id) => *id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates_both_ways() {
        assert_eq!(rfc3339_micros(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(951_782_400, 5),
            "2000-02-29T00:00:00.000005Z"
        );
        assert_eq!(
            rfc3339_micros(1_795_963_445, 123_456),
            "2026-11-29T14:44:05.123456Z"
        );
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        for secs in [
            0,
            951_782_400,
            1_795_963_445,
            4_107_542_399,
            253_402_300_799,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
        }
        assert_eq!(parse_rfc3339("2026-11-29T14:44:05.5Z"), Some(1_795_963_445));
        for bad in [
            "",
            "2026-11-29",
            "2026-13-01T00:00:00Z",
            "2026-11-29T14:44:05+01:00",
            "x026-11-29T14:44:05Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_change_follows_the_table() {
        use KeyState::*;
        let allowed: &[(Change, KeyState, KeyState)] = &[
            (Change::Suspend, Active, Suspended),
            (Change::Suspend, Deactivated, Suspended),
            (Change::Resume, Suspended, Active),
            (Change::Compromised, Active, Compromised),
            (Change::Compromised, Deactivated, Compromised),
            (Change::Compromised, Suspended, Compromised),
            (Change::Destroy, Active, DestroyPending),
            (Change::Destroy, Deactivated, DestroyPending),
            (Change::Destroy, Suspended, DestroyPending),
            (Change::Destroy, Compromised, DestroyPending),
            (Change::CancelDestroy, DestroyPending, Active),
        ];
        for change in Change::ALL {
            for from in KeyState::ALL {
                let expected = allowed
                    .iter()
                    .find(|(c, f, _)| *c == change && *f == from)
                    .map(|(_, _, to)| *to);
                assert_eq!(
                    change.apply(from, None),
                    expected,
                    "{} from {from}",
                    change.name()
                );
            }
        }
        // resume and cancel_destroy go back to where the key was.
        assert_eq!(
            Change::Resume.apply(Suspended, Some(Deactivated)),
            Some(Deactivated)
        );
        assert_eq!(
            Change::CancelDestroy.apply(DestroyPending, Some(Compromised)),
            Some(Compromised)
        );
    }

    #[test]
    fn the_state_in_force_follows_time() {
        let period = Duration::from_secs(100);
        let mut meta = KeyMeta::new(KeyId::from_bytes([2; 32]), Strength::S128, 1000, None);
        assert_eq!(meta.state_at(1099, period), KeyState::Active);
        assert_eq!(meta.state_at(1100, period), KeyState::Deactivated);
        meta.state = KeyState::DestroyPending;
        meta.destroy_at = Some(2000);
        assert_eq!(meta.state_at(1999, period), KeyState::DestroyPending);
        assert_eq!(meta.state_at(2000, period), KeyState::Destroyed);
        // Damage is found.
        let mut bytes = meta.encode();
        bytes[10] ^= 1;
        assert!(KeyMeta::decode(&bytes, &meta.key_id).is_err());
        assert!(KeyMeta::decode(&meta.encode(), &KeyId::from_bytes([3; 32])).is_err());
    }
}
