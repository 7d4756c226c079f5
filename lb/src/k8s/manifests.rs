//! Reading Kubernetes objects from YAML files in a directory (the agent's static source and
//! `lbctl`'s offline mode).
//!
//! One file's problems never cost another file its objects. Within a file, a YAML syntax
//! error ends the reading of that file (libyaml cannot find the next document again): the
//! documents before it are used, the error names the file, line and column, and the file is
//! listed in [`Manifests::incomplete`] so a source that keeps per-file state can hold on to
//! that file's last good objects instead. A document that is YAML but not a valid object is
//! reported and skipped, and reading goes on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_yaml::Value;

use super::ClusterObjects;
use crate::yaml::{self, YamlError};

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
    /// The file is not YAML from some point on; the documents before that point are used.
    #[error(
        "{}:{}: document {}: not YAML: {}; the rest of this file is not read",
        path.display(),
        position(source),
        source.document,
        source.message
    )]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's complaint, with the document, line and column.
        #[source]
        source: YamlError,
    },
    /// A document is YAML, but not a valid object of its kind.
    #[error("{}: document {index}{kind}: {message}", path.display())]
    Document {
        /// The file.
        path: PathBuf,
        /// 1-based position of the document in the file.
        index: usize,
        /// ` (Kind name)` when known.
        kind: String,
        /// What does not fit.
        message: String,
    },
}

impl ManifestError {
    /// The file or directory the problem is in.
    pub fn path(&self) -> &Path {
        match self {
            ManifestError::Read { path, .. }
            | ManifestError::Syntax { path, .. }
            | ManifestError::Document { path, .. } => path,
        }
    }
}

/// `LINE:COLUMN` (or `LINE`), the form editors jump to after the file name.
fn position(err: &YamlError) -> String {
    match (err.line, err.column) {
        (Some(line), Some(column)) => format!("{line}:{column}"),
        (Some(line), None) => line.to_string(),
        _ => "?".to_owned(),
    }
}

/// Objects read from a directory, and the documents that could not be read.
#[derive(Debug, Default)]
pub struct Manifests {
    /// The objects.
    pub objects: ClusterObjects,
    /// Problems, one per bad document, plus at most one syntax or read error per file.
    pub errors: Vec<ManifestError>,
    /// Kinds seen but not used (Deployments and the like).
    pub skipped_kinds: Vec<String>,
    /// Files that could not be read to their end (unreadable, or a syntax error part-way):
    /// their objects here are only those before the problem (the agent's source keeps the
    /// file's last complete reading instead, `lb::source::ManifestDir`).
    pub incomplete: Vec<PathBuf>,
}

impl Manifests {
    /// Adds everything of `other` (another file's reading) to this one.
    pub fn extend(&mut self, other: Manifests) {
        let objects = other.objects;
        self.objects.services.extend(objects.services);
        self.objects.endpoint_slices.extend(objects.endpoint_slices);
        self.objects.nodes.extend(objects.nodes);
        self.objects.pods.extend(objects.pods);
        self.errors.extend(other.errors);
        self.skipped_kinds.extend(other.skipped_kinds);
        self.incomplete.extend(other.incomplete);
    }
}

/// The manifest files directly in `dir` (`*.yaml`, `*.yml`, `*.json`), in name order.
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
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

/// Reads every manifest file directly in `dir` (see [`manifest_files`]), in name order.
pub fn load_dir(dir: &Path) -> Result<Manifests, ManifestError> {
    let mut out = Manifests::default();
    for file in manifest_files(dir)? {
        out.extend(load_file(&file));
    }
    Ok(out)
}

/// Reads one manifest file; a file that cannot be read is an error in the result.
pub fn load_file(path: &Path) -> Manifests {
    let mut out = Manifests::default();
    match std::fs::read_to_string(path) {
        Ok(text) => load_text(path, &text, &mut out),
        Err(source) => {
            out.errors.push(ManifestError::Read {
                path: path.to_owned(),
                source,
            });
            out.incomplete.push(path.to_owned());
        }
    }
    out
}

/// Adds the objects of one file's text (multi-document YAML, `List` kinds unpacked), up to
/// the first YAML syntax error.
pub fn load_text(path: &Path, text: &str, out: &mut Manifests) {
    let docs = yaml::documents(text);
    for (i, value) in docs.values.into_iter().enumerate() {
        if !value.is_null() {
            add_object(path, i + 1, value, out);
        }
    }
    if let Some(source) = docs.error {
        out.errors.push(ManifestError::Syntax {
            path: path.to_owned(),
            source,
        });
        out.incomplete.push(path.to_owned());
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
        "Service" => parse::<k8s_openapi::api::core::v1::Service>(value)
            .map(|o| objects.services.push(Arc::new(o.into()))),
        "EndpointSlice" => parse::<k8s_openapi::api::discovery::v1::EndpointSlice>(value)
            .map(|o| objects.endpoint_slices.push(Arc::new(o.into()))),
        "Node" => parse(value).map(|o| objects.nodes.push(Arc::new(o))),
        "Pod" => parse(value).map(|o| objects.pods.push(Arc::new(o))),
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
        "" => Err("no `kind`".to_owned()),
        other => {
            out.skipped_kinds.push(format!("{other} {name}"));
            Ok(())
        }
    };
    if let Err(message) = result {
        out.errors.push(fail(message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str =
        "apiVersion: v1\nkind: Service\nmetadata: {name: NAME, namespace: default}\n\
                           spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n";

    fn service(name: &str) -> String {
        SERVICE.replace("NAME", name)
    }

    fn names(m: &Manifests) -> Vec<String> {
        m.objects
            .services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    /// A scratch directory removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("lb-manifests-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).unwrap();
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_syntax_error_names_the_file_line_and_column_and_ends_that_file_only() {
        let dir = Dir::new("syntax");
        dir.write("a.yaml", &service("first"));
        let bad = format!(
            "{}---\nthis: is: not: yaml: [\n---\n{}",
            service("before"),
            service("after")
        );
        dir.write("b.yaml", &bad);
        dir.write("c.yaml", &service("last"));
        let m = load_dir(&dir.0).unwrap();
        assert_eq!(names(&m), ["first", "before", "last"]);
        assert_eq!(m.errors.len(), 1, "{:?}", m.errors);
        let text = m.errors[0].to_string();
        let expected = format!(
            "{}:6:9: document 2: not YAML: mapping values are not allowed in this context; \
             the rest of this file is not read",
            dir.0.join("b.yaml").display()
        );
        assert_eq!(text, expected);
        assert_eq!(m.incomplete, [dir.0.join("b.yaml")]);
    }
}
