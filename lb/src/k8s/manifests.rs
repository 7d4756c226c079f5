//! Reading Kubernetes objects from YAML files in a directory (the agent's static source and
//! `lbctl`'s offline mode).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use super::ClusterObjects;

/// A manifest that could not be read; other files and documents are still used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The directory or a file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A document is not YAML, or not a valid object of its kind.
    #[error("{}: document {index}{kind}: {message}", path.display())]
    Document {
        /// The file.
        path: PathBuf,
        /// 1-based position of the document in the file.
        index: usize,
        /// ` (Kind name)` when known.
        kind: String,
        /// The parser's complaint.
        message: String,
    },
}

impl ManifestError {
    /// Whether the file as a whole could not be used (unreadable, or not YAML at all), as
    /// opposed to one of its objects being invalid.
    pub fn makes_file_unusable(&self) -> bool {
        match self {
            ManifestError::Read { .. } => true,
            ManifestError::Document { kind, message, .. } => kind.is_empty() && message != NO_KIND,
        }
    }
}

const NO_KIND: &str = "no `kind`";

/// Objects read from a directory, and the documents that could not be read.
#[derive(Debug, Default)]
pub struct Manifests {
    /// The objects.
    pub objects: ClusterObjects,
    /// Problems, one per bad file or document.
    pub errors: Vec<ManifestError>,
    /// Kinds seen but not used (Deployments and the like).
    pub skipped_kinds: Vec<String>,
}

/// Reads every `*.yaml`, `*.yml` and `*.json` file directly in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Manifests, ManifestError> {
    let mut out = Manifests::default();
    for file in list_dir(dir)? {
        match std::fs::read_to_string(&file) {
            Ok(text) => load_text(&file, &text, &mut out),
            Err(source) => out.errors.push(ManifestError::Read { path: file, source }),
        }
    }
    Ok(out)
}

/// The manifest files directly in `dir` (`*.yaml`, `*.yml`, `*.json`), in name order.
pub fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let read_err = |source| ManifestError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Adds the objects of one file's text (multi-document YAML, `List` kinds unpacked).
pub fn load_text(path: &Path, text: &str, out: &mut Manifests) {
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(value) => add_object(path, index, value, out),
            Err(e) => {
                out.errors.push(ManifestError::Document {
                    path: path.to_owned(),
                    index,
                    kind: String::new(),
                    message: e.to_string(),
                });
                // The parser cannot resume after a syntax error: it would repeat it forever.
                break;
            }
        }
    }
}

fn add_object(path: &Path, index: usize, value: Value, out: &mut Manifests) {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned();
    let fail = |message: String| ManifestError::Document {
        path: path.to_owned(),
        index,
        kind: if kind.is_empty() {
            String::new()
        } else {
            format!(" ({kind} {name})")
        },
        message,
    };
    /// The typed object, or the path of the field that does not fit and why.
    fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." {
                inner
            } else {
                format!("{path}: {inner}")
            }
        })
    }
    let objects = &mut out.objects;
    let result = match kind.as_str() {
        "Service" => parse(value).map(|o| objects.services.push(o)),
        "EndpointSlice" => parse(value).map(|o| objects.endpoint_slices.push(o)),
        "Node" => parse(value).map(|o| objects.nodes.push(o)),
        "Pod" => parse(value).map(|o| objects.pods.push(o)),
        "List" => {
            let items = value
                .get("items")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default();
            for item in items {
                add_object(path, index, item, out);
            }
            Ok(())
        }
        "" => Err(NO_KIND.to_owned()),
        other => {
            out.skipped_kinds.push(format!("{other} {name}"));
            Ok(())
        }
    };
    if let Err(message) = result {
        out.errors.push(fail(message));
    }
}
