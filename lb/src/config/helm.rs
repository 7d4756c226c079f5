//! Helm conventions: `--set key=value` syntax, value typing, and the lenient scalar forms a
//! values file may use (`"true"` for `true`, a device list as a string).

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::ConfigError;

/// Parses one `--set` argument (`a.b=1,c=x`, `devices={eth0,eth1}`, `range=1\,2`) into
/// `(dotted key, typed value)` assignments, in order.
pub fn parse_set(arg: &str) -> Result<Vec<(String, Value)>, ConfigError> {
    let mut out = Vec::new();
    for assignment in split_unescaped(arg, ',') {
        let Some((key, raw)) = assignment.split_once('=') else {
            return Err(ConfigError::SetSyntax {
                arg: arg.to_owned(),
                reason: format!(
                    "{assignment:?} has no '='; expected KEY=VALUE[,KEY=VALUE…], with commas \
                     inside a value escaped as \\, (e.g. nodePort.range=10000\\,32767)"
                ),
            });
        };
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(ConfigError::SetSyntax {
                arg: arg.to_owned(),
                reason: format!("{key:?} is not a dotted option name, e.g. maglev.tableSize"),
            });
        }
        out.push((key.to_owned(), typed_value(&unescape(raw))));
    }
    Ok(out)
}

/// Splits on `sep` outside `{…}` and not preceded by a backslash; escapes are kept for
/// [`unescape`].
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0u32;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        let current = parts.last_mut().expect("parts is never empty");
        match c {
            '\\' => {
                current.push(c);
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            '{' => {
                depth += 1;
                current.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            c if c == sep && depth == 0 => parts.push(String::new()),
            c => current.push(c),
        }
    }
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Types a `--set` value the way Helm does: `true`/`false`, integers, `null`, `{a,b}` lists,
/// and strings otherwise.
fn typed_value(raw: &str) -> Value {
    if let Some(inner) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        return Value::Sequence(
            split_unescaped(inner, ',')
                .iter()
                .map(|item| item.trim())
                .filter(|item| !item.is_empty())
                .map(|item| typed_value(&unescape(item)))
                .collect(),
        );
    }
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ => match raw.parse::<i64>() {
            // `+1` and `007` stay strings, as in Helm.
            Ok(n) if !raw.starts_with('+') && (raw == "0" || !raw.starts_with('0')) => {
                Value::Number(n.into())
            }
            _ => Value::String(raw.to_owned()),
        },
    }
}

/// Sets `key` (dotted) in `tree` to `value`, creating mappings on the way and replacing any
/// scalar that stands where a mapping is needed.
pub fn set_path(tree: &mut Value, key: &str, value: Value) {
    let mut node = tree;
    for part in key.split('.') {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().expect("just made a mapping");
        node = map
            .entry(Value::String(part.to_owned()))
            .or_insert(Value::Null);
    }
    *node = value;
}

/// Every leaf of `tree` as `(dotted key, value)`: scalars, sequences and empty mappings.
pub fn leaves(tree: &Value) -> Vec<(String, Value)> {
    fn walk(prefix: &str, node: &Value, out: &mut Vec<(String, Value)>) {
        match node {
            Value::Mapping(map) if !map.is_empty() => {
                for (k, v) in map {
                    let name = match k {
                        Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                    };
                    let key = if prefix.is_empty() {
                        name
                    } else {
                        format!("{prefix}.{name}")
                    };
                    walk(&key, v, out);
                }
            }
            other => out.push((prefix.to_owned(), other.clone())),
        }
    }
    let mut out = Vec::new();
    walk("", tree, &mut out);
    out
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOrString {
    Bool(bool),
    String(String),
}

fn to_bool<E: de::Error>(v: BoolOrString) -> Result<bool, E> {
    match v {
        BoolOrString::Bool(b) => Ok(b),
        BoolOrString::String(s) => match s.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(E::custom(format!("expected true or false, got {s:?}"))),
        },
    }
}

/// A boolean written as `true` or as the string `"true"` (Helm users quote them).
pub fn bool_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    to_bool(BoolOrString::deserialize(d).map_err(|_| de::Error::custom("expected true or false"))?)
}

/// Like [`bool_or_string`], where `null` means "not set".
pub fn opt_bool_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<BoolOrString>::deserialize(d)
        .map_err(|_| de::Error::custom("expected true or false"))?
    {
        None => Ok(None),
        Some(v) => to_bool(v).map(Some),
    }
}

/// `devices`: a list, or a string of names separated by commas or spaces (`eth0 eth1`,
/// `eth+`).
pub fn devices_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Devices {
        List(Vec<String>),
        String(String),
        Null(()),
    }
    let list = match Devices::deserialize(d)
        .map_err(|_| de::Error::custom("expected a list of device names or a string"))?
    {
        Devices::List(list) => list,
        Devices::String(s) => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(str::to_owned)
            .collect(),
        Devices::Null(()) => Vec::new(),
    };
    Ok(list
        .into_iter()
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_types_values_like_helm() {
        let got = parse_set("a=true,b=42,c=dsr,d={eth0,eth1},e=null,f=007").unwrap();
        let yaml: Vec<(String, String)> = got
            .into_iter()
            .map(|(k, v)| (k, serde_yaml::to_string(&v).unwrap().trim().to_owned()))
            .collect();
        assert_eq!(
            yaml,
            [
                ("a", "true"),
                ("b", "42"),
                ("c", "dsr"),
                ("d", "- eth0\n- eth1"),
                ("e", "null"),
                ("f", "'007'"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn set_keeps_escaped_commas_in_the_value() {
        let got = parse_set(r"nodePort.range=10000\,32767").unwrap();
        assert_eq!(
            got,
            [(
                "nodePort.range".to_owned(),
                Value::String("10000,32767".into())
            )]
        );
    }

    #[test]
    fn set_without_equals_is_an_error_naming_the_argument() {
        let err = parse_set("loadBalancer.mode").unwrap_err().to_string();
        assert!(err.contains("loadBalancer.mode"), "{err}");
        assert!(err.contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn set_path_and_leaves_round_trip() {
        let mut tree = Value::Null;
        set_path(&mut tree, "cgroup.autoMount.enabled", Value::Bool(false));
        set_path(&mut tree, "cgroup.hostRoot", Value::String("/x".into()));
        let keys: Vec<String> = leaves(&tree).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["cgroup.autoMount.enabled", "cgroup.hostRoot"]);
    }
}
