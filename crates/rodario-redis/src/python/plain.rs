//! Plain data between MessagePack and pickle: the values both can hold.
//!
//! [`Plain`] reads whatever a self-describing format offers and writes it back, so a
//! MessagePack value becomes a pickle value (and back) through serde without either side
//! knowing the other.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_pickle::Value;

/// A value of the data model MessagePack and pickle share.
#[derive(Debug, PartialEq)]
pub(crate) enum Plain {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    List(Vec<Plain>),
    Map(Vec<(Plain, Plain)>),
}

impl Plain {
    /// The pickle value (lists for sequences, dicts for maps).
    pub(crate) fn into_pickle(self) -> Result<Value, serde_pickle::Error> {
        serde_pickle::to_value(&self)
    }

    /// A pickle value as plain data: tuples, lists, sets and frozensets become lists.
    pub(crate) fn from_pickle(value: Value) -> Result<Self, serde_pickle::Error> {
        serde_pickle::from_value(value)
    }
}

impl Serialize for Plain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Plain::Nil => serializer.serialize_unit(),
            Plain::Bool(b) => serializer.serialize_bool(*b),
            Plain::Int(i) => serializer.serialize_i64(*i),
            Plain::UInt(u) => serializer.serialize_u64(*u),
            Plain::Float(f) => serializer.serialize_f64(*f),
            Plain::Text(s) => serializer.serialize_str(s),
            Plain::Bytes(b) => serializer.serialize_bytes(b),
            Plain::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Plain::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Plain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PlainVisitor)
    }
}

struct PlainVisitor;

impl<'de> Visitor<'de> for PlainVisitor {
    type Value = Plain;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("plain data")
    }

    fn visit_unit<E>(self) -> Result<Plain, E> {
        Ok(Plain::Nil)
    }
    fn visit_none<E>(self) -> Result<Plain, E> {
        Ok(Plain::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Plain, D::Error> {
        Plain::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Plain, E> {
        Ok(Plain::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Plain, E> {
        Ok(Plain::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Plain, E> {
        Ok(i64::try_from(v).map_or(Plain::UInt(v), Plain::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Plain, E> {
        Ok(Plain::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Plain, E> {
        Ok(Plain::Text(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Plain, E> {
        Ok(Plain::Text(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Plain, E> {
        Ok(Plain::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Plain, E> {
        Ok(Plain::Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Plain, A::Error> {
        // Capacity from the data, bounded: a declared length is not trusted.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Plain::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Plain, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Plain::Map(entries))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<Plain, A::Error> {
        Err(de::Error::custom("an enum is not plain data"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rodario_core::frame::{decode_value, encode_value};
    use serde_pickle::HashableValue;

    #[test]
    fn messagepack_and_pickle_values_cross_both_ways() {
        let pickle = Value::Tuple(vec![
            Value::None,
            Value::Bool(true),
            Value::I64(-3),
            Value::F64(1.5),
            Value::String("é".into()),
            Value::Bytes(vec![0, 255]),
            Value::Dict(
                [(
                    HashableValue::String("k".into()),
                    Value::List(vec![Value::I64(1)]),
                )]
                .into_iter()
                .collect(),
            ),
        ]);
        let plain = Plain::from_pickle(pickle).unwrap();
        let packed = encode_value(&plain, "v").unwrap();
        let back: Plain = decode_value(&packed, "v").unwrap();
        assert_eq!(back, plain);
        let Value::List(items) = back.into_pickle().unwrap() else {
            panic!("a sequence is a list")
        };
        assert_eq!(items[4], Value::String("é".into()));
        assert_eq!(items[5], Value::Bytes(vec![0, 255]));
    }
}
