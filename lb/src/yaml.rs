//! Reading YAML text that a user wrote (manifests, the values file) within bounds.
//!
//! `serde_yaml` alone is not safe on untrusted text in three ways, each of which this module
//! closes:
//!
//! - Its multi-document iterator never ends after a syntax error: libyaml stays in its error
//!   state and every further `next()` yields the same error again (one bad line once grew a
//!   process to 23 GiB). After an "unknown anchor" it resumes mid-document and panics. So
//!   reading stops at the first error: the documents before it are complete (libyaml had seen
//!   their end) and are kept; nothing after it is read, since libyaml cannot find the next
//!   document boundary again.
//! - Its alias limit counts alias jumps, not what they expand to: a 50 kB document whose
//!   anchor holds 10 000 scalars, referenced 10 000 times, expands to 10^8 values and exhausts
//!   memory. Here every value built, whether read directly or through an alias, is charged to
//!   a budget proportional to the text's length ([`budget_for`]); past it the document is an
//!   error. Text without aliases always fits: every node and string byte comes from at least
//!   one byte of text.
//! - It can panic on input its loader did not expect; a panic while reading is turned into an
//!   error naming the document, never a crash of the agent.
//!
//! - libyaml's scanner checks every open flow level on every token, so deep flow nesting costs
//!   time quadratic in the depth (400 kB of `{a: ` took two minutes). `serde_yaml` refuses
//!   more than 128 levels anyway, so the text is cut before the first bracket that opens level
//!   [`MAX_FLOW_DEPTH`] ([`flow_depth_cut`]) and only the part before it is parsed: the
//!   documents before are kept, the one that holds it is an error at that bracket.
//!
//! Block nesting costs libyaml linear time, and `serde_yaml` stops it at 128 levels.

use std::cell::Cell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

/// Why YAML text could not be read, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct YamlError {
    /// 1-based position of the document in the text.
    pub document: usize,
    /// 1-based line of the problem, when the parser knows it.
    pub line: Option<usize>,
    /// 1-based column of the problem, when the parser knows it.
    pub column: Option<usize>,
    /// What is wrong, without the position.
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "line {line} column {column}: ")?,
            (Some(line), None) => write!(f, "line {line}: ")?,
            _ => {}
        }
        write!(f, "{}", self.message)
    }
}

impl YamlError {
    fn from_serde(document: usize, err: &serde_yaml::Error) -> Self {
        let location = err.location();
        let mut message = err.to_string();
        if let Some(loc) = &location {
            // serde_yaml puts the position inside the message; it is in our fields instead.
            message = message.replacen(
                &format!(" at line {} column {}", loc.line(), loc.column()),
                "",
                1,
            );
        }
        YamlError {
            document,
            line: location.as_ref().map(serde_yaml::Location::line),
            column: location.as_ref().map(serde_yaml::Location::column),
            message,
        }
    }
}

/// The documents read from one text, up to the first error.
#[derive(Debug, Default)]
pub struct Documents {
    /// Every document before the error, in order (an empty document is `Value::Null`).
    pub values: Vec<Value>,
    /// The error that ended reading, if any; nothing after it was read.
    pub error: Option<YamlError>,
}

/// How many values and string bytes reading `text` may build: twice what the text could hold
/// without aliases, plus room for the modest aliasing real manifests use.
pub fn budget_for(text: &str) -> usize {
    text.len().saturating_mul(2).saturating_add(64 * 1024)
}

/// Flow collections (`[`, `{`) nested this deep are refused before libyaml sees them; twice
/// `serde_yaml`'s own limit, so a depth it accepts is never refused here.
pub const MAX_FLOW_DEPTH: usize = 256;

/// Reads every document of `text`, stopping at the first error.
pub fn documents(text: &str) -> Documents {
    let budget = Cell::new(budget_for(text));
    let mut out = Documents::default();
    let cut = flow_depth_cut(text);
    let parsed = cut.map_or(text, |(at, _, _)| &text[..at]);
    let read = panic::catch_unwind(AssertUnwindSafe(|| {
        for doc in serde_yaml::Deserializer::from_str(parsed) {
            let index = out.values.len() + 1;
            match (Budgeted { left: &budget }).deserialize(doc) {
                Ok(value) => out.values.push(value),
                Err(err) => {
                    out.error = Some(YamlError::from_serde(index, &err));
                    return;
                }
            }
        }
    }));
    if read.is_err() {
        out.error = Some(YamlError {
            document: out.values.len() + 1,
            line: None,
            column: None,
            message: "the YAML parser failed on this document".to_owned(),
        });
    }
    if let Some((_, line, column)) = cut {
        // The cut text ends inside an open flow collection, so its last document is an error
        // at the cut; say why it was cut instead.
        out.error = Some(YamlError {
            document: out.values.len() + 1,
            line: Some(line),
            column: Some(column),
            message: format!(
                "flow collections (`[`, `{{`) nested deeper than {MAX_FLOW_DEPTH} levels"
            ),
        });
    }
    out
}

/// Where a flow collection opens at depth [`MAX_FLOW_DEPTH`]: byte offset, 1-based line and
/// column. A light scan: brackets count outside quoted scalars and comments, and open a
/// collection only where a node can start (after blank space, line start, `[{,:-?` or inside
/// a flow collection). Brackets in block scalars count too, so text of hundreds of unclosed
/// brackets inside a `|` block would be cut: no manifest or values file holds such text.
pub fn flow_depth_cut(text: &str) -> Option<(usize, usize, usize)> {
    let bytes = text.as_bytes();
    let (mut depth, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let mut i = 0;
    let mut prev = b'\n';
    while i < bytes.len() {
        let c = bytes[i];
        let node_start = depth > 0
            || matches!(
                prev,
                b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',' | b':' | b'-' | b'?'
            );
        match c {
            b'\n' => {
                line += 1;
                line_start = i + 1;
            }
            b'#' if matches!(prev, b' ' | b'\t' | b'\n' | b'\r') => {
                while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                    i += 1;
                }
            }
            b'\'' | b'"' if node_start => {
                // A quoted scalar: skip to its end ('' and \" are escapes).
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\n' => {
                            line += 1;
                            line_start = i + 1;
                        }
                        b'\\' if c == b'"' => i += 1,
                        q if q == c => {
                            if c == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                                i += 1;
                            } else {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'[' | b'{' if node_start => {
                depth += 1;
                if depth >= MAX_FLOW_DEPTH {
                    // Columns count characters, as libyaml's do.
                    let column = text[line_start..i].chars().count() + 1;
                    return Some((i, line, column));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = bytes.get(i).copied().unwrap_or(c);
        i += 1;
    }
    None
}

/// Reads `text` as exactly one document (an empty text is `Value::Null`).
pub fn single_document(text: &str) -> Result<Value, YamlError> {
    let mut docs = documents(text);
    if let Some(err) = docs.error {
        return Err(err);
    }
    match docs.values.len() {
        0 => Ok(Value::Null),
        1 => Ok(docs.values.remove(0)),
        n => Err(YamlError {
            document: 2,
            line: None,
            column: None,
            message: format!("expected one YAML document, found {n} (separated by `---`)"),
        }),
    }
}

/// Builds a [`Value`] like `Value::deserialize`, charging every node and string byte to a
/// budget shared by all documents of one text.
#[derive(Clone, Copy)]
struct Budgeted<'a> {
    left: &'a Cell<usize>,
}

impl Budgeted<'_> {
    fn charge<E: de::Error>(self, units: usize) -> Result<(), E> {
        match self.left.get().checked_sub(units) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(E::custom(
                "aliases expand to more than this file's size allows (nested anchors, as in \
                 a \"billion laughs\" document); write the repeated parts out",
            )),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budgeted<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budgeted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.charge(1)?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        self.charge(1)?;
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        self.charge(1)?;
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        self.charge(1)?;
        Ok(Value::Number(f.into()))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.charge(1 + s.len())?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.charge(1 + s.len())?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.charge(1)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(1)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(1)?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(self)? {
            if mapping.contains_key(&key) {
                let shown = serde_yaml::to_string(&key).unwrap_or_default();
                return Err(de::Error::custom(format!(
                    "duplicate key {}",
                    shown.trim_end()
                )));
            }
            let value = map.next_value_seed(self)?;
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, contents) = data.variant::<String>()?;
        if tag.is_empty() {
            return Err(de::Error::custom("empty YAML tag is not allowed"));
        }
        self.charge(1 + tag.len())?;
        let value = contents.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn stops_at_a_syntax_error_and_keeps_the_documents_before_it() {
        let docs = documents("a: 1\n---\nb: 2\n---\nthis: is: not: yaml: [\n---\nc: 3\n");
        assert_eq!(docs.values.len(), 2);
        let err = docs.error.expect("a syntax error");
        assert_eq!((err.document, err.line, err.column), (3, Some(5), Some(9)));
        assert_eq!(
            err.to_string(),
            "line 5 column 9: mapping values are not allowed in this context"
        );
    }

    #[test]
    fn an_unknown_anchor_ends_reading_without_a_panic() {
        let docs = documents("a: *x\n---\nb: 2\n");
        assert!(docs.values.is_empty());
        assert_eq!(docs.error.unwrap().message, "unknown anchor");
    }

    #[test]
    fn reads_like_serde_yaml_when_the_text_is_fine() {
        let text = "a: &x [1, 2.5, true, null, \"s\"]\nb: *x\nc: !Tag {k: v}\n---\n---\n- 3\n";
        let ours = documents(text);
        assert!(ours.error.is_none());
        let theirs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(ours.values, theirs);
    }

    #[test]
    fn duplicate_keys_are_an_error() {
        let err = documents("a: 1\na: 2\n").error.unwrap();
        assert!(err.message.contains("duplicate key a"), "{err}");
        assert_eq!(err.line, Some(1), "the mapping that holds it");
    }

    #[test]
    fn quadratic_aliases_exceed_the_budget() {
        let mut text = String::from("a: &a [");
        text.push_str(&"x,".repeat(10_000));
        text.push_str("x]\nb: [");
        text.push_str(&"*a,".repeat(10_000));
        text.push_str("*a]\n");
        let err = documents(&text).error.expect("over budget");
        assert!(err.message.contains("aliases expand"), "{err}");
    }

    #[test]
    fn deep_flow_nesting_is_cut_before_libyaml_sees_it() {
        let text = format!("a: 1\n---\nb: {}\n", "{a: ".repeat(100_000));
        let docs = documents(&text);
        assert_eq!(docs.values.len(), 1, "the document before is kept");
        let err = docs.error.unwrap();
        assert_eq!(err.document, 2);
        assert_eq!((err.line, err.column), (Some(3), Some(4 + 4 * 255)));
        assert!(err.message.contains("deeper than 256"), "{err}");
    }

    #[test]
    fn brackets_in_quotes_comments_and_plain_scalars_do_not_count() {
        let deep = "[".repeat(MAX_FLOW_DEPTH);
        for text in [
            format!("a: '{deep}'\n"),
            format!("a: \"{deep}\\\"{deep}\"\n"),
            format!("a: 'it''s {deep}'\n"),
            format!("# {deep}\na: 1 # {deep}\n"),
            format!("a: x{deep}\n"),
        ] {
            assert_eq!(flow_depth_cut(&text), None, "{text}");
            assert!(documents(&text).error.is_none(), "{text}");
        }
        assert!(flow_depth_cut(&format!("a: {deep}")).is_some());
    }

    #[test]
    fn one_document_only_for_single() {
        assert_eq!(single_document("").unwrap(), Value::Null);
        let err = single_document("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.message.contains("found 2"), "{err}");
    }
}
