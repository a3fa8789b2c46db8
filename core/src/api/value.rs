//! The protocol-neutral values every codec translates to and from, and
//! their shapes.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

/// A value on the wire, whatever the protocol: what the codecs translate to
/// and from. Strings and bytes are wiped on drop (they may hold a KEK or a
/// DEK); `Debug` shows their lengths only.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(Zeroizing<String>),
    /// Binary data (XML-RPC `<base64>`, a base64 string in JSON).
    Bytes(Zeroizing<Vec<u8>>),
    /// A struct (an XML-RPC `<struct>`, a JSON object).
    Struct(BTreeMap<String, Value>),
    /// An array (an XML-RPC `<array>`, a JSON array).
    Array(Vec<Value>),
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(Zeroizing::new(s.into()))
    }

    /// A bytes value.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(Zeroizing::new(b.into()))
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "Int({i})"),
            Value::Bool(b) => write!(f, "Bool({b})"),
            Value::Str(s) => write!(f, "Str(<{} bytes>)", s.len()),
            Value::Bytes(b) => write!(f, "Bytes(<{} bytes>)", b.len()),
            Value::Struct(m) => f.debug_map().entries(m.iter()).finish(),
            Value::Array(items) => f.debug_list().entries(items.iter()).finish(),
        }
    }
}

/// The shape of a parameter or a result, as the method table gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// An integer.
    Int,
    /// A boolean.
    Bool,
    /// A string.
    Str,
    /// Binary data.
    Bytes,
    /// A struct with these members.
    Struct(&'static [(&'static str, Shape)]),
    /// An array of values of this shape.
    Array(&'static Shape),
    /// Any value: a struct whose members are optional or vary, read by
    /// name (a JSON value is taken as it is: numbers as integers, strings
    /// as strings).
    Any,
}

impl Shape {
    /// The type's name as docs/PROTOCOL.md writes it.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Int => "int",
            Shape::Bool => "boolean",
            Shape::Str => "string",
            Shape::Bytes => "base64",
            Shape::Struct(_) | Shape::Any => "struct",
            Shape::Array(_) => "array",
        }
    }

    pub(super) fn fits(self, value: &Value) -> bool {
        match (self, value) {
            (Shape::Int, Value::Int(_))
            | (Shape::Bool, Value::Bool(_))
            | (Shape::Str, Value::Str(_))
            | (Shape::Bytes, Value::Bytes(_)) => true,
            // Members the shape does not name are ignored: a newer server may
            // send more.
            (Shape::Struct(members), Value::Struct(map)) => members
                .iter()
                .all(|(name, shape)| map.get(*name).is_some_and(|v| shape.fits(v))),
            (Shape::Array(shape), Value::Array(items)) => items.iter().all(|v| shape.fits(v)),
            (Shape::Any, _) => true,
            _ => false,
        }
    }
}
