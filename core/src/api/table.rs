//! The method table: every wire method's name, parameters, result shape
//! and help text, once.

use crate::lifecycle::Change;
use crate::{Error, ErrorCode};

use super::{Shape, Value};

/// A parameter of a wire method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// Its name (JSON-RPC named parameters use it).
    pub name: &'static str,
    /// Its shape.
    pub shape: Shape,
    /// Whether it may be left out (only trailing parameters).
    pub optional: bool,
}

/// One row of the method table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Method {
    /// The wire name.
    pub name: &'static str,
    /// Its parameters, in order.
    pub params: &'static [Param],
    /// The shape of its result.
    pub result: Shape,
    /// One paragraph for `system.methodHelp`.
    pub help: &'static str,
}

impl Method {
    /// Whether a call of it costs real CPU or I/O (key generation, an RSA
    /// decryption or key-pair check, a listing): `generate`, `get_key`,
    /// `rotate`, the state changes and `list_keys`. A batch may hold only a
    /// few.
    ///
    /// ```
    /// assert!(keyserver::api::method("get_key").unwrap().is_expensive());
    /// assert!(!keyserver::api::method("status").unwrap().is_expensive());
    /// ```
    pub fn is_expensive(&self) -> bool {
        // A state change may check a KEK (an RSA key-pair check); a listing
        // reads every key's metadata.
        self.name == GENERATE.name
            || self.name == GET_KEY.name
            || self.name == ROTATE.name
            || self.name == LIST_KEYS.name
            || Change::ALL.iter().any(|c| c.name() == self.name)
    }

    /// Whether it changes what the server stores: `generate`, `rotate`
    /// and the state changes.
    pub fn changes_state(&self) -> bool {
        self.name == GENERATE.name
            || self.name == ROTATE.name
            || Change::ALL.iter().any(|c| c.name() == self.name)
    }

    /// Whether a call of it is answered only once its audit line is on
    /// disk: every state change, and `get_key`, which hands out a DEK (a
    /// `generate`: once its new key's `begun` line is, written while the
    /// key is stored).
    pub fn audited_durably(&self) -> bool {
        self.changes_state() || self.name == GET_KEY.name
    }

    /// The parameter list as a protocol writes it: `open` and `close` are
    /// `(`/`)` for XML-RPC and `[`/`]` for JSON-RPC, so the signature of
    /// `generate` reads `() or (strength: int)` on XML-RPC.
    ///
    /// ```
    /// let generate = keyserver::api::method("generate").unwrap();
    /// assert_eq!(generate.signature('[', ']'), "[] or [strength: int, alg: string]");
    /// ```
    pub fn signature(&self, open: char, close: char) -> String {
        let list = |params: &[Param]| {
            let inner: Vec<String> = params
                .iter()
                .map(|p| format!("{}: {}", p.name, p.shape.name()))
                .collect();
            format!("{open}{}{close}", inner.join(", "))
        };
        let required = self.params.iter().take_while(|p| !p.optional).count();
        if required == self.params.len() {
            list(self.params)
        } else {
            format!(
                "{} or {}",
                list(&self.params[..required]),
                list(self.params)
            )
        }
    }

    /// The error for parameters that do not fit this method.
    pub fn invalid_params(&self, open: char, close: char) -> Error {
        Error::protocol(
            ErrorCode::InvalidParams,
            format!(
                "invalid parameters: expected {}",
                self.signature(open, close)
            ),
        )
    }

    pub(super) fn accepts(&self, params: &[Value]) -> bool {
        let required = self.params.iter().filter(|p| !p.optional).count();
        (required..=self.params.len()).contains(&params.len())
            && self.params.iter().zip(params).all(|(p, v)| p.shape.fits(v))
    }
}

pub(super) const KEY_ID: Param = Param {
    name: "key_id",
    shape: Shape::Str,
    optional: false,
};

pub(super) const GENERATE: Method = Method {
    name: "generate",
    params: &[
        Param {
            name: "strength",
            shape: Shape::Int,
            optional: true,
        },
        Param {
            name: "alg",
            shape: Shape::Str,
            optional: true,
        },
    ],
    result: Shape::Str,
    help: "generate([strength[, alg]]) -> string: creates a key-encryption key (KEK) of the given \
           security strength (128, 192 or 256; default: the server's) and algorithm (rsa, ec or \
           hybrid-pq; default: the server's), stores its wrapped data key, and returns the \
           private KEK as PEM. The server keeps no copy.",
};

pub(super) const GET_KEY: Method = Method {
    name: "get_key",
    params: &[Param {
        name: "kek",
        shape: Shape::Str,
        optional: false,
    }],
    result: Shape::Bytes,
    help: "get_key(kek) -> base64: unwraps and returns the data key (DEK) of the KEK given as \
           PKCS#8 PEM (server-side unwrap).",
};

pub(super) const GET_WRAPPED: Method = Method {
    name: "get_wrapped",
    params: &[KEY_ID],
    result: Shape::Struct(&[("key_id", Shape::Str), ("record", Shape::Bytes)]),
    help: "get_wrapped(key_id) -> struct {key_id, record}: the stored wrapped-DEK record, for \
           client-side unwrap (the KEK never leaves the client).",
};

pub(super) const CONTAINS: Method = Method {
    name: "contains",
    params: &[KEY_ID],
    result: Shape::Bool,
    help: "contains(key_id) -> boolean: whether a key is stored under this key id.",
};

pub(super) const STATUS: Method = Method {
    name: "status",
    params: &[],
    // Any: kek_alg and fips are absent from older servers (the reply is
    // checked member by member when it is read).
    result: Shape::Any,
    help: "status() -> struct {keys, version, suite, storage, strength, kek_alg, fips}: what the \
           server says about itself.",
};

pub(super) const TARGET: Param = Param {
    name: "target",
    shape: Shape::Str,
    optional: false,
};

pub(super) const DESCRIBE: Method = Method {
    name: "describe",
    params: &[KEY_ID],
    result: Shape::Any,
    help: "describe(key_id) -> struct {key_id, state, strength, created, owner, deactivate_at, \
           destroy_at, rotated_to, rotated_from, kek_alg}: the key's lifecycle (absent members omitted; times as RFC \
           3339 strings).",
};

pub(super) const ROTATE: Method = Method {
    name: "rotate",
    params: &[
        Param {
            name: "kek",
            shape: Shape::Str,
            optional: false,
        },
        Param {
            name: "strength",
            shape: Shape::Int,
            optional: true,
        },
    ],
    result: Shape::Str,
    help: "rotate(kek[, strength]) -> string: a new KEK (PKCS#8 PEM) whose record wraps the same \
           data key, so data encrypted before decrypts with it unchanged; the old key becomes \
           deactivated with rotated_to set. A strength moves the key to a stronger KEK.",
};

const fn change_method(name: &'static str, help: &'static str) -> Method {
    Method {
        name,
        params: &[TARGET],
        result: Shape::Any,
        help,
    }
}

pub(super) const SUSPEND: Method = change_method(
    "suspend",
    "suspend(target) -> struct: the key (target: its KEK as PEM, or its key id for operators) \
     gives no data key until resumed.",
);
pub(super) const RESUME: Method = change_method(
    "resume",
    "resume(target) -> struct: a suspended key returns to the state it had.",
);
pub(super) const COMPROMISED: Method = change_method(
    "compromised",
    "compromised(target) -> struct: the key is marked compromised: it still gives its data key \
     (to re-encrypt old data), each use logged as a warning, and encrypts nothing new.",
);
pub(super) const DESTROY: Method = change_method(
    "destroy",
    "destroy(target) -> struct {key_id, state, destroy_at, ...}: the key gives nothing from now \
     and its wrapped data key is destroyed at destroy_at (the server's destroy window from \
     now) unless cancel_destroy comes first.",
);
pub(super) const CANCEL_DESTROY: Method = change_method(
    "cancel_destroy",
    "cancel_destroy(target) -> struct: a destroy-pending key returns to the state it had.",
);

pub(super) const LIST_KEYS: Method = Method {
    name: "list_keys",
    params: &[Param {
        name: "filter",
        shape: Shape::Any,
        optional: true,
    }],
    result: Shape::Any,
    help: "list_keys([filter]) -> struct {keys: array of describe structs, cursor}: a page of \
           keys in key id order; filter {state, owner, past_cryptoperiod, cursor, limit}, every \
           member optional; pass the answer's cursor for the next page.",
};

/// The method table: every wire method, once.
pub const METHODS: &[Method] = &[
    GENERATE,
    GET_KEY,
    GET_WRAPPED,
    CONTAINS,
    STATUS,
    DESCRIBE,
    ROTATE,
    SUSPEND,
    RESUME,
    COMPROMISED,
    DESTROY,
    CANCEL_DESTROY,
    LIST_KEYS,
];

/// The row of the method table named `name`.
pub fn method(name: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.name == name)
}

/// The error for a method name not in the table.
pub fn unknown_method() -> Error {
    Error::protocol(ErrorCode::MethodNotFound, "unknown method")
}
