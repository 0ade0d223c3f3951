//! JSON on the shell's side, self-describing MessagePack on the wire's.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::failure::Failure;

/// The argument tuple of a call: each shell argument parsed as one JSON value, the list
/// encoded as a MessagePack array, as a generated proxy encodes its parameters.
pub fn encode_args(args: &[String]) -> Result<Vec<u8>, Failure> {
    let values = args
        .iter()
        .enumerate()
        .map(|(i, arg)| {
            serde_json::from_str::<Value>(arg).map_err(|e| {
                Failure::usage(format!(
                    "argument {} ({}) is not valid JSON ({e}): pass one JSON value per \
                     parameter, strings in quotes, e.g. '\"text\"'",
                    i + 1,
                    shorten(arg)
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    rmp_serde::to_vec(&values)
        .map_err(|e| Failure::usage(format!("cannot encode the arguments: {e}")))
}

/// Decodes a MessagePack value (a reply, a call's arguments) to JSON.
pub fn decode(bytes: &[u8]) -> Result<Value, String> {
    rmp_serde::from_slice::<Json>(bytes)
        .map(|json| json.0)
        .map_err(|e| e.to_string())
}

/// An argument as an error message quotes it: long ones are cut, so the message stays one
/// short line.
fn shorten(arg: &str) -> String {
    const MAX: usize = 40;
    match arg.char_indices().nth(MAX) {
        None => format!("{arg:?}"),
        Some((end, _)) => format!("{:?}…", &arg[..end]),
    }
}

/// Any MessagePack value read as JSON. `serde_json::Value` itself refuses what JSON has no
/// type for; here binary becomes an array of byte values and a non-string map key its JSON
/// text, so that every reply an actor can send prints.
#[derive(Debug)]
pub struct Json(pub Value);

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor).map(Json)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any MessagePack value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN nor infinity: those print as null, as serde_json prints them.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Array(v.iter().map(|b| Value::from(*b)).collect()))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Json(value)) = seq.next_element()? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some((Json(key), Json(value))) = map.next_entry()? {
            let key = match key {
                Value::String(key) => key,
                other => other.to_string(),
            };
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_travel_as_an_array() {
        let encoded = encode_args(&["\"x\"".into(), "2".into(), "{\"a\":[1.5,null]}".into()])
            .expect("valid JSON");
        let decoded: (
            String,
            u8,
            std::collections::BTreeMap<String, Vec<Option<f64>>>,
        ) = rmp_serde::from_slice(&encoded).expect("a tuple");
        assert_eq!(decoded.0, "x");
        assert_eq!(decoded.1, 2);
        assert_eq!(decoded.2["a"], vec![Some(1.5), None]);
    }

    #[test]
    fn invalid_json_names_the_argument() {
        let failure = encode_args(&["1".into(), "hello".into()]).unwrap_err();
        assert_eq!(failure.code, crate::failure::USAGE);
        assert!(
            failure.message.contains("argument 2 (\"hello\")"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn what_json_lacks_still_prints() {
        #[derive(serde::Serialize)]
        struct Reply {
            #[serde(with = "serde_bytes_like")]
            blob: Vec<u8>,
            keyed: std::collections::BTreeMap<u8, bool>,
            nothing: (),
        }
        mod serde_bytes_like {
            pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(v)
            }
        }
        let bytes = rmp_serde::to_vec_named(&Reply {
            blob: vec![1, 2],
            keyed: [(7, true)].into(),
            nothing: (),
        })
        .expect("encodes");
        assert_eq!(
            decode(&bytes).expect("decodes"),
            serde_json::json!({"blob": [1, 2], "keyed": {"7": true}, "nothing": null})
        );
    }
}
