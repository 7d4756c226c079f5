//! What can be wrong with the agent's options; every message names the option, the value and
//! what would be accepted.

use std::fmt;
use std::path::PathBuf;

/// One problem with the options.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The values file could not be read.
    #[error("cannot read values file {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The values file is not one YAML document.
    #[error("values file {} is not valid YAML: {source}", path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The parser's complaint, with the line and column.
        #[source]
        source: crate::yaml::YamlError,
    },
    /// The values file is YAML, but not a mapping of options.
    #[error(
        "values file {} holds {found}, not options: expected a mapping of option names to \
         values, e.g. `kubeProxyReplacement: true`",
        path.display()
    )]
    NotAMapping {
        /// The file.
        path: PathBuf,
        /// What it holds instead (`a list`, `the string "x"`).
        found: String,
    },
    /// A `--set` argument is malformed.
    #[error("--set {arg:?}: {reason}")]
    SetSyntax {
        /// The argument.
        arg: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// An option that does not exist.
    #[error("unknown option `{key}`{hint}")]
    UnknownKey {
        /// The dotted key as given.
        key: String,
        /// `; did you mean …?` or empty.
        hint: String,
    },
    /// An option with a value it cannot take.
    #[error("option `{key}`: invalid value {value}: {expected}")]
    InvalidValue {
        /// The dotted key.
        key: String,
        /// The value as given, quoted.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// Options that cannot be combined.
    #[error("{options}: {reason}")]
    Conflict {
        /// The options and values involved, e.g. `loadBalancer.dsrDispatch=opt with routingMode=tunnel`.
        options: String,
        /// Why, and what to do instead.
        reason: String,
    },
}

impl ConfigError {
    /// An invalid value, with the value shown as YAML would write it.
    pub fn invalid(key: &str, value: impl fmt::Debug, expected: impl Into<String>) -> Self {
        ConfigError::InvalidValue {
            key: key.to_owned(),
            value: format!("{value:?}"),
            expected: expected.into(),
        }
    }
}

/// Every problem found, in the order found; configuration is all-or-nothing.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} invalid option(s):", self.0.len())?;
        for err in &self.0 {
            writeln!(f, "  - {err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
