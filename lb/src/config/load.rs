//! Reading options: a Helm-style values file, then `--set` flags in order (later wins), with
//! every unknown key and ill-typed value reported, not just the first.

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml::Value;

use super::helm::{leaves, parse_set, set_path};
use super::{ConfigError, ConfigErrors, Values};

/// Keys of older guides and where they live now.
const RENAMED: &[(&str, &str)] = &[("hostServices.enabled", "socketLB.enabled")];

/// Keys the documents mention that this load balancer does not have, and why.
const UNSUPPORTED: &[(&str, &str)] = &[(
    "config.bpfMapDynamicSizeRatio",
    "map sizes are not derived from memory here; set bpf.lbMapMax",
)];

/// Reads `file` (if any), applies `sets`, and checks every key and value against [`Values`].
pub fn load_values(file: Option<&Path>, sets: &[String]) -> Result<Values, ConfigErrors> {
    let (values, errors) = load_values_lenient(file, sets)?;
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Like [`load_values`], but returns the values built from every valid key beside the errors,
/// so that later checks can report their problems too. Fails only when nothing could be read.
pub fn load_values_lenient(
    file: Option<&Path>,
    sets: &[String],
) -> Result<(Values, Vec<ConfigError>), ConfigErrors> {
    let mut errors = Vec::new();
    let mut tree = match file {
        Some(path) => match read_yaml(path) {
            Ok(tree) => tree,
            Err(err) => return Err(ConfigErrors(vec![err])),
        },
        None => Value::Mapping(Default::default()),
    };
    for arg in sets {
        match parse_set(arg) {
            Ok(assignments) => {
                for (key, value) in assignments {
                    set_path(&mut tree, &key, value);
                }
            }
            Err(err) => errors.push(err),
        }
    }
    let values = check_tree(&tree, &mut errors);
    Ok((values, errors))
}

fn read_yaml(path: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let tree = crate::yaml::single_document(&text).map_err(|source| ConfigError::ParseFile {
        path: path.to_owned(),
        source,
    })?;
    let found = match tree {
        Value::Null => return Ok(Value::Mapping(Default::default())),
        Value::Mapping(_) => return Ok(tree),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Tagged(_) => "a tagged value".to_owned(),
        scalar => format!("the value {}", show(&scalar)),
    };
    Err(ConfigError::NotAMapping {
        path: path.to_owned(),
        found,
    })
}

/// Keeps every leaf that is a known option with a valid value; reports the others.
fn check_tree(tree: &Value, errors: &mut Vec<ConfigError>) -> Values {
    let defaults = serde_yaml::to_value(Values::default()).expect("defaults serialize");
    let known: BTreeSet<String> = leaves(&defaults).into_iter().map(|(k, _)| k).collect();
    let mut accepted = defaults.clone();
    for (key, value) in leaves(tree) {
        if value.is_null() || is_empty_mapping(&value) {
            continue; // Helm: null means "use the default".
        }
        if !known.contains(&key) {
            errors.push(unknown_key(&key, &value, &known));
            continue;
        }
        // `--set` types `10256` as a number; a string option takes it as written (what Helm's
        // `--set-string` would do).
        let as_string = match &value {
            Value::Number(n) => Some(Value::String(n.to_string())),
            Value::Bool(b) => Some(Value::String(b.to_string())),
            _ => None,
        };
        match accepts(&defaults, &key, &value) {
            Ok(()) => set_path(&mut accepted, &key, value),
            Err(err) => match as_string.filter(|s| accepts(&defaults, &key, s).is_ok()) {
                Some(s) => set_path(&mut accepted, &key, s),
                None => errors.push(ConfigError::InvalidValue {
                    expected: accepted_text(&key)
                        .unwrap_or_else(|| clean_serde_message(&err.to_string())),
                    key,
                    value: show(&value),
                }),
            },
        }
    }
    serde_yaml::from_value(accepted).expect("every accepted leaf deserialized on its own")
}

/// What a number- or bool-typed option accepts, in words (serde would say "expected u32").
/// Enum options are left to serde, whose message lists the variants.
fn accepted_text(key: &str) -> Option<String> {
    let text = match key {
        "maglev.tableSize" => {
            let sizes: Vec<String> = crate::maglev::TABLE_SIZES
                .iter()
                .map(u32::to_string)
                .collect();
            format!("expected one of the primes {}", sizes.join(", "))
        }
        "bpf.lbMapMax" => format!(
            "expected a whole number from 1 to {}",
            super::MAX_LB_MAP_MAX
        ),
        "prometheus.port" => {
            "expected a port from 1 to 65535 (Cilium's default is 9962)".to_owned()
        }
        "k8sServicePort" => {
            "expected a port from 1 to 65535 (kubeadm's default is 6443)".to_owned()
        }
        "kubeProxyReplacement" => "expected true or false (the older strict is now true; partial \
                                   and disabled are now false)"
            .to_owned(),
        _ => return None,
    };
    Some(text)
}

/// Whether [`Values`] takes `value` at `key`, all else default.
fn accepts(defaults: &Value, key: &str, value: &Value) -> Result<(), serde_yaml::Error> {
    let mut probe = defaults.clone();
    set_path(&mut probe, key, value.clone());
    serde_yaml::from_value::<Values>(probe).map(drop)
}

fn is_empty_mapping(value: &Value) -> bool {
    value.as_mapping().is_some_and(|m| m.is_empty())
}

fn unknown_key(key: &str, value: &Value, known: &BTreeSet<String>) -> ConfigError {
    let section: Vec<&String> = known
        .iter()
        .filter(|k| k.starts_with(&format!("{key}.")))
        .collect();
    if !section.is_empty() {
        let names: Vec<&str> = section
            .iter()
            .map(|k| k[key.len() + 1..].split('.').next().unwrap_or_default())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        return ConfigError::InvalidValue {
            key: key.to_owned(),
            value: show(value),
            expected: format!("`{key}` is a section: set its keys ({})", names.join(", ")),
        };
    }
    let hint = if let Some((_, new)) = RENAMED.iter().find(|(old, _)| *old == key) {
        format!("; it is now `{new}`")
    } else if let Some((_, why)) = UNSUPPORTED.iter().find(|(k, _)| *k == key) {
        format!(": not supported ({why})")
    } else if let Some(rest) = key.strip_prefix("global.").filter(|r| known.contains(*r)) {
        format!("; drop the `global.` prefix of the Cilium 1.6 chart: `{rest}`")
    } else if let Some(best) = closest(key, known) {
        format!("; did you mean `{best}`?")
    } else {
        String::new()
    };
    ConfigError::UnknownKey {
        key: key.to_owned(),
        hint,
    }
}

/// The known key nearest to `key` by edit distance, when it is near enough to be a typo.
fn closest<'a>(key: &str, known: &'a BTreeSet<String>) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::levenshtein(&lower, &k.to_ascii_lowercase()), k))
        .min()
        .filter(|(distance, _)| *distance <= (key.len() / 3).max(3))
        .map(|(_, k)| k.as_str())
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .replace('\n', " "),
    }
}

/// serde's messages, without the position suffix that means nothing for a single value.
fn clean_serde_message(msg: &str) -> String {
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    match msg.split_once(": ") {
        // from_value prefixes the path it failed at; our key already says where.
        Some((path, rest)) if !path.contains(' ') => rest.to_owned(),
        _ => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(sets: &[&str]) -> Vec<String> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        match load_values(None, &sets) {
            Ok(_) => Vec::new(),
            Err(ConfigErrors(errs)) => errs.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn later_sets_win_and_types_follow_helm() {
        let sets = [
            "loadBalancer.mode=dsr",
            "loadBalancer.mode=hybrid,maglev.tableSize=65521",
        ]
        .map(String::from);
        let v = load_values(None, &sets).unwrap();
        assert_eq!(v.load_balancer.mode, super::super::LbMode::Hybrid);
        assert_eq!(v.maglev.table_size, 65521);
    }

    #[test]
    fn unknown_key_suggests_the_closest_known_key() {
        let errs = errors(&["loadBalancer.algoritm=maglev"]);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].contains("unknown option `loadBalancer.algoritm`"),
            "{}",
            errs[0]
        );
        assert!(
            errs[0].contains("did you mean `loadBalancer.algorithm`?"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn legacy_keys_point_to_their_new_names() {
        let errs = errors(&[
            "global.hostServices.protocols=tcp",
            "hostServices.enabled=true",
        ]);
        assert!(errs[0].contains("`hostServices.protocols`"), "{}", errs[0]);
        assert!(errs[1].contains("now `socketLB.enabled`"), "{}", errs[1]);
    }

    #[test]
    fn bad_enum_names_the_accepted_values() {
        let errs = errors(&["loadBalancer.mode=fast"]);
        assert_eq!(errs.len(), 1);
        let e = &errs[0];
        assert!(
            e.contains("`loadBalancer.mode`") && e.contains("\"fast\""),
            "{e}"
        );
        assert!(
            e.contains("snat") && e.contains("dsr") && e.contains("hybrid"),
            "{e}"
        );
    }

    #[test]
    fn every_error_is_reported_not_just_the_first() {
        let errs = errors(&[
            "maglev.tableSize=abc",
            "nodePort.bindProtection=maybe",
            "nope=1",
        ]);
        assert_eq!(errs.len(), 3, "{errs:#?}");
    }

    #[test]
    fn a_section_given_a_scalar_lists_its_keys() {
        let errs = errors(&["loadBalancer=dsr"]);
        assert!(
            errs[0].contains("is a section") && errs[0].contains("mode"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn values_file_and_quoted_booleans() {
        let dir = std::env::temp_dir().join(format!("lb-values-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("values.yaml");
        std::fs::write(
            &file,
            "kubeProxyReplacement: \"true\"\ndevices: eth0 eth1\n",
        )
        .unwrap();
        let v = load_values(Some(&file), &["devices={eth+}".to_owned()]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(v.kube_proxy_replacement);
        assert_eq!(v.devices, ["eth+"]);
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let err = load_values(Some(Path::new("/nonexistent/values.yaml")), &[]).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/values.yaml"),
            "{err}"
        );
    }
}
