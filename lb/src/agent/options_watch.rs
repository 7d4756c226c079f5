//! Options are parsed once, when the agent starts: the programs are loaded with them and every
//! translation uses them. [`OptionsWatch`] notices when the values file changes afterwards and
//! refuses the change as a whole, naming each option that differs, so the agent never runs
//! half on the old options and half on the new ones; restarting the agent applies them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_yaml::Value;

use crate::config::{self, AgentConfig};

/// The running options and where they were read from.
#[derive(Debug)]
pub struct OptionsWatch {
    file: Option<PathBuf>,
    sets: Vec<String>,
    running: BTreeMap<String, String>,
    /// The last complaint, so a file that stays changed is reported once.
    last_complaint: Option<String>,
}

impl OptionsWatch {
    /// Watches the options the agent started with.
    pub fn new(file: Option<PathBuf>, sets: Vec<String>, running: &AgentConfig) -> Self {
        OptionsWatch {
            file,
            sets,
            running: flatten_options(running),
            last_complaint: None,
        }
    }

    /// Reads the values file again. Returns the complaint to log when it now differs from the
    /// running options (or no longer loads), the first time it does so in this form.
    pub fn check(&mut self) -> Option<String> {
        self.file.as_ref()?;
        let complaint = match config::load(self.file.as_deref(), &self.sets) {
            Err(errors) => Some(format!(
                "the values file no longer loads; the agent keeps running with the options it \
                 started with:\n{errors}"
            )),
            Ok(config) => {
                let changed = changed_options(&self.running, &flatten_options(&config));
                (!changed.is_empty()).then(|| {
                    format!(
                        "the values file changed {}; the agent keeps running with the options it \
                         started with (its programs were loaded with them): restart lb-agent to \
                         apply the change",
                        changed.join(", ")
                    )
                })
            }
        };
        if complaint == self.last_complaint {
            return None;
        }
        self.last_complaint.clone_from(&complaint);
        complaint
    }
}

/// Every effective option as `dotted.key -> value`.
fn flatten_options(config: &AgentConfig) -> BTreeMap<String, String> {
    let value = serde_yaml::to_value(config.effective_values()).unwrap_or(Value::Null);
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let key = k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned);
                let key = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            let text = serde_yaml::to_string(other).unwrap_or_default();
            out.insert(prefix.to_owned(), text.trim().to_owned());
        }
    }
}

/// `option (old → new)` for each option that differs.
fn changed_options(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.map_or("unset", String::as_str).to_owned();
            format!("{k} ({} → {})", show(old.get(k)), show(new.get(k)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values_file(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "lb-options-watch-{}-{}.yaml",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_changed_values_file_is_refused_naming_each_changed_option_once() {
        let path = values_file("kubeProxyReplacement: true\n");
        let running = config::load(Some(&path), &[]).unwrap();
        let mut watch = OptionsWatch::new(Some(path.clone()), Vec::new(), &running);
        assert_eq!(watch.check(), None, "nothing changed");

        std::fs::write(
            &path,
            "kubeProxyReplacement: true\nloadBalancer:\n  algorithm: maglev\n",
        )
        .unwrap();
        let complaint = watch.check().expect("the change is refused");
        assert!(
            complaint.contains("loadBalancer.algorithm (random → maglev)"),
            "{complaint}"
        );
        assert!(!complaint.contains("kubeProxyReplacement"), "{complaint}");
        assert_eq!(watch.check(), None, "said once");

        std::fs::write(&path, "kubeProxyReplacement: [\n").unwrap();
        let complaint = watch.check().expect("a broken file is reported");
        assert!(complaint.contains("no longer loads"), "{complaint}");

        std::fs::write(&path, "kubeProxyReplacement: true\n").unwrap();
        assert_eq!(watch.check(), None, "back to the running options");
        std::fs::remove_file(&path).unwrap();
    }
}
