//! Errors in Kubernetes objects: each names the object, the field and the value.

use std::fmt;

/// `Kind namespace/name` of an object, for messages.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// `Service`, `EndpointSlice`, `Pod`, `Node`.
    pub kind: &'static str,
    /// Namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// Name, or `<unnamed>` when `metadata.name` is missing.
    pub name: String,
}

impl ObjectRef {
    /// The reference for an object's metadata.
    pub fn new(kind: &'static str, meta: &(impl super::Named + ?Sized)) -> Self {
        ObjectRef {
            kind,
            namespace: meta.namespace().unwrap_or("default").to_owned(),
            name: meta.name().unwrap_or("<unnamed>").to_owned(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A malformed or conflicting object; the object is not programmed, the others are.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {value}: {reason}")]
pub struct TranslateError {
    /// The object.
    pub object: ObjectRef,
    /// The field path, e.g. `spec.ports[1].nodePort`.
    pub field: String,
    /// The value found, quoted, or `<missing>`.
    pub value: String,
    /// What is wrong and what is accepted.
    pub reason: String,
}

/// Builds errors for one object, so field code only says what is wrong.
#[derive(Clone, Debug)]
pub struct ErrorSink {
    object: ObjectRef,
    errors: Vec<TranslateError>,
}

impl ErrorSink {
    /// A sink for `object`.
    pub fn new(object: ObjectRef) -> Self {
        ErrorSink {
            object,
            errors: Vec::new(),
        }
    }

    /// The object this sink reports on.
    pub fn object(&self) -> &ObjectRef {
        &self.object
    }

    /// Records that `field` has the bad `value`.
    pub fn invalid(
        &mut self,
        field: impl Into<String>,
        value: impl fmt::Debug,
        reason: impl Into<String>,
    ) {
        self.errors.push(TranslateError {
            object: self.object.clone(),
            field: field.into(),
            value: format!("{value:?}"),
            reason: reason.into(),
        });
    }

    /// Records that a required `field` is absent.
    pub fn missing(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(TranslateError {
            object: self.object.clone(),
            field: field.into(),
            value: "<missing>".to_owned(),
            reason: reason.into(),
        });
    }

    /// Whether nothing was recorded.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// The recorded errors.
    pub fn into_errors(self) -> Vec<TranslateError> {
        self.errors
    }
}
