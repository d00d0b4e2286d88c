//! YAML documents that keep their keys in the order written. The pods are worked on as
//! `serde_json::Value` (whose maps sort their keys), so the output is put back into the input's
//! order: each map's keys as the input had them, then the keys injection added, in the order
//! Kubernetes manifests usually show them.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Number, Value};

/// A YAML node as parsed, keys in document order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

/// Keys injection adds, in the order they are written when the input had no say. Keys not
/// listed come after these, sorted.
const NEW_KEY_ORDER: [&str; 16] = [
    "name",
    "image",
    "imagePullPolicy",
    "restartPolicy",
    "args",
    "env",
    "value",
    "valueFrom",
    "ports",
    "containerPort",
    "startupProbe",
    "readinessProbe",
    "livenessProbe",
    "resources",
    "securityContext",
    "volumeMounts",
];

/// Parses a stream of documents; empty documents are skipped.
pub(crate) fn parse(text: &str) -> Result<Vec<Node>, String> {
    serde_saphyr::from_multiple::<Node>(text).map_err(|e| e.to_string())
}

/// Writes documents as a YAML stream, `---` between them.
pub(crate) fn write(documents: &[Node]) -> Result<String, String> {
    let mut options = serde_saphyr::SerializerOptions::default();
    // Long one-line strings stay one line: no folding for users to diff.
    options.folded_wrap_chars = usize::MAX;
    serde_saphyr::to_string_multiple_with_options(documents, options).map_err(|e| e.to_string())
}

impl Node {
    /// What kind of node this is, for messages.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) | Node::UInt(_) | Node::Float(_) => "a number",
            Node::String(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }

    /// The node as JSON; `Err` names a value JSON cannot hold (NaN, infinity).
    pub(crate) fn to_json(&self) -> Result<Value, String> {
        Ok(match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::UInt(u) => Value::from(*u),
            Node::Float(f) => Number::from_f64(*f)
                .map(Value::Number)
                .ok_or_else(|| format!("{f} cannot be written in a Kubernetes object"))?,
            Node::String(s) => Value::String(s.clone()),
            Node::Seq(items) => {
                Value::Array(items.iter().map(Node::to_json).collect::<Result<_, _>>()?)
            }
            Node::Map(entries) => {
                let mut map = Map::new();
                for (key, value) in entries {
                    map.insert(key.clone(), value.to_json()?);
                }
                Value::Object(map)
            }
        })
    }

    /// `value` as a node whose maps follow `guide`'s key order where `guide` has the key.
    pub(crate) fn from_json(value: &Value, guide: Option<&Node>) -> Node {
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Node::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Node::UInt(u)
                } else {
                    Node::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => Node::String(s.clone()),
            Value::Array(items) => {
                let guides = match guide {
                    Some(Node::Seq(guides)) => guides.as_slice(),
                    _ => &[],
                };
                let same_length = guides.len() == items.len();
                Node::Seq(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            let guide = match item.get("name").and_then(Value::as_str) {
                                Some(name) => guides.iter().find(|g| g.name() == Some(name)),
                                None if same_length => guides.get(i),
                                None => None,
                            };
                            Node::from_json(item, guide)
                        })
                        .collect(),
                )
            }
            Value::Object(map) => {
                let guide_entries = match guide {
                    Some(Node::Map(entries)) => entries.as_slice(),
                    _ => &[],
                };
                let mut entries = Vec::with_capacity(map.len());
                for (key, guide) in guide_entries {
                    if let Some(value) = map.get(key) {
                        entries.push((key.clone(), Node::from_json(value, Some(guide))));
                    }
                }
                let mut added: Vec<(&String, &Value)> = map
                    .iter()
                    .filter(|(key, _)| !guide_entries.iter().any(|(k, _)| k == *key))
                    .collect();
                added.sort_by_key(|(key, _)| {
                    let rank = NEW_KEY_ORDER
                        .iter()
                        .position(|k| k == key)
                        .unwrap_or(NEW_KEY_ORDER.len());
                    (rank, key.as_str())
                });
                for (key, value) in added {
                    entries.push((key.clone(), Node::from_json(value, None)));
                }
                Node::Map(entries)
            }
        }
    }

    /// The `name` of a mapping, which matches list items across an edit.
    fn name(&self) -> Option<&str> {
        match self {
            Node::Map(entries) => entries.iter().find_map(|(key, value)| match value {
                Node::String(name) if key == "name" => Some(name.as_str()),
                _ => None,
            }),
            _ => None,
        }
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::Int(i) => serializer.serialize_i64(*i),
            Node::UInt(u) => serializer.serialize_u64(*u),
            Node::Float(f) => serializer.serialize_f64(*f),
            Node::String(s) => serializer.serialize_str(s),
            Node::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Node, E> {
        Ok(Node::Int(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Node, E> {
        Ok(i64::try_from(u).map_or(Node::UInt(u), Node::Int))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Node, E> {
        Ok(Node::Float(f))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Node, E> {
        Ok(Node::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Node, E> {
        Ok(Node::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let key = match key {
                Node::String(s) => s,
                Node::Null => "null".to_owned(),
                Node::Bool(b) => b.to_string(),
                Node::Int(i) => i.to_string(),
                Node::UInt(u) => u.to_string(),
                Node::Float(f) => f.to_string(),
                Node::Seq(_) | Node::Map(_) => {
                    return Err(de::Error::custom(
                        "a key is a list or a mapping: Kubernetes objects have string keys",
                    ));
                }
            };
            let value = map.next_value::<Node>()?;
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => entries.push((key, value)),
            }
        }
        Ok(Node::Map(entries))
    }
}
