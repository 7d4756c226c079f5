//! The manifests in `deploy/`: every document parses into its `k8s-openapi` type with no field
//! the type does not know, and together they give the agent exactly what it needs: the RBAC
//! rules of `lb::k8s::API_ACCESS`, bound to the ServiceAccount the DaemonSet runs as, a values
//! file the agent's own option parser accepts, probes on its health server, the host mounts at
//! the paths its options name, and the documented capabilities instead of `privileged`.
//!
//! Each check is a function over the parsed manifests; the `*_rejects_*` tests break one thing
//! in a copy of the manifests and expect that check to fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use lb::config::AgentConfig;

/// What the agent's container adds after dropping every capability; 03-daemonset.yaml says
/// why next to each, and the README lists them.
const CAPABILITIES: &[&str] = &[
    "BPF",
    "NET_ADMIN",
    "PERFMON",
    "SYS_ADMIN",
    "SYS_PTRACE",
    "SYS_RESOURCE",
];

/// Every document of `deploy/`, by kind (each kind exactly once).
#[derive(Clone, Debug)]
struct Manifests {
    service_account: ServiceAccount,
    role: ClusterRole,
    binding: ClusterRoleBinding,
    config_map: ConfigMap,
    daemon_set: DaemonSet,
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The files `kubectl apply -f deploy/` applies.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ is readable")
        .map(|e| e.expect("deploy/ entry").path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    files
}

/// `json` as the `k8s-openapi` type `T`, failing with the path of a bad field and on any field
/// `T` would drop (k8s-openapi ignores unknown fields, so a misspelt or misplaced one would
/// otherwise vanish silently): the typed value must serialise back to exactly `json`.
fn typed<T>(json: &serde_json::Value, what: &str) -> Result<T, String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let value: T = serde_path_to_error::deserialize(json.clone())
        .map_err(|e| format!("{what}: {} at {}", e.inner(), e.path()))?;
    let back = serde_json::to_value(&value).map_err(|e| format!("{what}: {e}"))?;
    let mut lost = Vec::new();
    differences(json, &back, String::new(), &mut lost);
    if lost.is_empty() {
        Ok(value)
    } else {
        Err(format!(
            "{what}: not read by the type (unknown or misplaced): {}",
            lost.join(", ")
        ))
    }
}

/// The paths where `original` has something `parsed` does not give back.
fn differences(
    original: &serde_json::Value,
    parsed: &serde_json::Value,
    path: String,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (original, parsed) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => differences(value, other, here, out),
                    None => out.push(here),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(x, y, format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path} ({a} read as {b})")),
    }
}

/// Parses every document of every manifest file into its type.
fn parse_all(files: &[PathBuf]) -> Result<Manifests, String> {
    let mut service_account = None;
    let mut role = None;
    let mut binding = None;
    let mut config_map = None;
    let mut daemon_set = None;
    fn put<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), String> {
        match slot.replace(value) {
            None => Ok(()),
            Some(_) => Err(format!("{what}: a second document of this kind")),
        }
    }
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let what = format!("{} document {}", file.display(), i + 1);
            let json: serde_json::Value = serde::Deserialize::deserialize(document)
                .map_err(|e| format!("{what}: not YAML: {e}"))?;
            if json.is_null() {
                continue;
            }
            let kind = json["kind"].as_str().unwrap_or_default().to_owned();
            let what = format!("{what} ({kind})");
            match kind.as_str() {
                "ServiceAccount" => put(&mut service_account, typed(&json, &what)?, &what)?,
                "ClusterRole" => put(&mut role, typed(&json, &what)?, &what)?,
                "ClusterRoleBinding" => put(&mut binding, typed(&json, &what)?, &what)?,
                "ConfigMap" => put(&mut config_map, typed(&json, &what)?, &what)?,
                "DaemonSet" => put(&mut daemon_set, typed(&json, &what)?, &what)?,
                _ => {
                    return Err(format!(
                        "{what}: unexpected kind {kind:?} (expected ServiceAccount, ClusterRole, \
                         ClusterRoleBinding, ConfigMap or DaemonSet)"
                    ))
                }
            }
        }
    }
    let missing = |kind: &str| format!("no {kind} in deploy/");
    Ok(Manifests {
        service_account: service_account.ok_or_else(|| missing("ServiceAccount"))?,
        role: role.ok_or_else(|| missing("ClusterRole"))?,
        binding: binding.ok_or_else(|| missing("ClusterRoleBinding"))?,
        config_map: config_map.ok_or_else(|| missing("ConfigMap"))?,
        daemon_set: daemon_set.ok_or_else(|| missing("DaemonSet"))?,
    })
}

fn manifests() -> Manifests {
    parse_all(&manifest_files()).unwrap_or_else(|e| panic!("{e}"))
}

fn pod_spec(m: &Manifests) -> Result<&PodSpec, String> {
    m.daemon_set
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or_else(|| "the DaemonSet has no pod template spec".to_owned())
}

/// The agent's container: the one running `lb-agent`.
fn agent_container(m: &Manifests) -> Result<&Container, String> {
    let runs_agent = |c: &&Container| {
        c.command
            .iter()
            .flatten()
            .chain(c.args.iter().flatten())
            .any(|word| word.ends_with("lb-agent"))
    };
    let agents: Vec<&Container> = pod_spec(m)?.containers.iter().filter(runs_agent).collect();
    match agents[..] {
        [one] => Ok(one),
        _ => Err(format!(
            "expected one container running lb-agent, found {}",
            agents.len()
        )),
    }
}

/// `(group, resource, verb)` of every permission.
type Grants = BTreeSet<(String, String, String)>;

fn check_rbac_rules(m: &Manifests) -> Result<(), String> {
    let mut granted = Grants::new();
    for rule in m.role.rules.iter().flatten() {
        if rule.resource_names.is_some() || rule.non_resource_urls.is_some() {
            return Err(format!(
                "rule {rule:?}: resourceNames and nonResourceURLs are not used"
            ));
        }
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    if [group, resource, verb].iter().any(|w| w.contains('*')) {
                        return Err(format!("rule {rule:?}: wildcard"));
                    }
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    let needed: Grants = lb::k8s::API_ACCESS
        .iter()
        .flat_map(|a| {
            a.verbs
                .iter()
                .map(|v| (a.group.to_owned(), a.resource.to_owned(), (*v).to_owned()))
        })
        .collect();
    if granted == needed {
        return Ok(());
    }
    Err(format!(
        "ClusterRole grants {:?} more and {:?} less than lb::k8s::API_ACCESS",
        granted.difference(&needed).collect::<Vec<_>>(),
        needed.difference(&granted).collect::<Vec<_>>()
    ))
}

fn check_binding(m: &Manifests) -> Result<(), String> {
    let role_ref = &m.binding.role_ref;
    if role_ref.api_group != "rbac.authorization.k8s.io"
        || role_ref.kind != "ClusterRole"
        || Some(&role_ref.name) != m.role.metadata.name.as_ref()
    {
        return Err(format!(
            "the binding refers to {role_ref:?}, not ClusterRole {:?}",
            m.role.metadata.name
        ));
    }
    let account = &m.service_account.metadata;
    match m.binding.subjects.as_deref() {
        Some([subject])
            if subject.kind == "ServiceAccount"
                && Some(&subject.name) == account.name.as_ref()
                && subject.namespace == account.namespace =>
        {
            Ok(())
        }
        subjects => Err(format!(
            "the binding's subjects are {subjects:?}, expected only ServiceAccount {:?} in {:?}",
            account.name, account.namespace
        )),
    }
}

fn check_runs_as_service_account(m: &Manifests) -> Result<(), String> {
    let spec = pod_spec(m)?;
    let account = &m.service_account.metadata;
    if spec.service_account_name != account.name {
        return Err(format!(
            "the DaemonSet runs as {:?}, not the bound ServiceAccount {:?}",
            spec.service_account_name, account.name
        ));
    }
    if m.daemon_set.metadata.namespace != account.namespace {
        return Err(format!(
            "the DaemonSet is in {:?}, its ServiceAccount in {:?}",
            m.daemon_set.metadata.namespace, account.namespace
        ));
    }
    if spec.automount_service_account_token == Some(false) {
        return Err("the agent needs its ServiceAccount token mounted".into());
    }
    Ok(())
}

/// The options the agent starts with: the file after `--values` must be a key of the
/// ConfigMap mounted at its directory, and the agent's own parser must accept it.
fn agent_config(m: &Manifests) -> Result<AgentConfig, String> {
    let container = agent_container(m)?;
    let words: Vec<&String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .collect();
    let file = words
        .windows(2)
        .find(|w| w[0] == "--values")
        .map(|w| Path::new(w[1].as_str()))
        .ok_or("the agent is not given --values FILE")?;
    let (dir, key) = (
        file.parent().unwrap_or(Path::new("/")),
        file.file_name().unwrap_or_default().to_string_lossy(),
    );
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|v| Path::new(&v.mount_path) == dir)
        .ok_or_else(|| format!("nothing is mounted at {}", dir.display()))?;
    let volume = pod_spec(m)?
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .ok_or_else(|| format!("no volume {:?}", mount.name))?;
    let source = volume
        .config_map
        .as_ref()
        .ok_or_else(|| format!("volume {:?} is not a ConfigMap", volume.name))?;
    if Some(&source.name) != m.config_map.metadata.name.as_ref()
        || m.config_map.metadata.namespace != m.daemon_set.metadata.namespace
    {
        return Err(format!(
            "the values volume mounts ConfigMap {:?}, not {:?} of this namespace",
            source.name, m.config_map.metadata.name
        ));
    }
    let text = m
        .config_map
        .data
        .as_ref()
        .and_then(|d| d.get(key.as_ref()))
        .ok_or_else(|| format!("the ConfigMap has no key {key:?}"))?;
    let path = std::env::temp_dir().join(format!(
        "lb-deploy-values-{}-{:?}.yaml",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    let loaded = lb::config::load(Some(&path), &[]);
    let _ = std::fs::remove_file(&path);
    loaded.map_err(|e| format!("the agent refuses the ConfigMap's {key}: {e}"))
}

fn check_probes(m: &Manifests) -> Result<(), String> {
    let config = agent_config(m)?;
    let port = config
        .healthz_bind_addr()
        .ok_or("kubeProxyReplacementHealthzBindAddr is not set: nothing answers the probes")?
        .port();
    let container = agent_container(m)?;
    let named_port = |name: &str| {
        container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    };
    let probes = [
        ("livenessProbe", &container.liveness_probe, "/livez", true),
        (
            "readinessProbe",
            &container.readiness_probe,
            "/healthz",
            true,
        ),
        ("startupProbe", &container.startup_probe, "/livez", false),
    ];
    for (name, probe, want_path, required) in probes {
        let Some(probe) = probe else {
            if required {
                return Err(format!("no {name}"));
            }
            continue;
        };
        let get = probe
            .http_get
            .as_ref()
            .ok_or_else(|| format!("{name} is not an HTTP GET"))?;
        let probe_port = match &get.port {
            IntOrString::Int(p) => Some(*p),
            IntOrString::String(n) => named_port(n),
        };
        if probe_port != Some(i32::from(port)) || get.path.as_deref() != Some(want_path) {
            return Err(format!(
                "{name} asks port {:?} path {:?}; the health server answers {want_path} on \
                 port {port}",
                get.port, get.path
            ));
        }
    }
    Ok(())
}

fn check_security(m: &Manifests) -> Result<(), String> {
    let spec = pod_spec(m)?;
    if spec.host_network != Some(true) {
        return Err("the agent must run in the node's network namespace (hostNetwork)".into());
    }
    let wanted: BTreeSet<&str> = CAPABILITIES.iter().copied().collect();
    let bpffs_mount = bpffs_mount_container(m)?;
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|c| !std::ptr::eq(*c, bpffs_mount))
    {
        let context = container.security_context.clone().unwrap_or_default();
        if context.privileged == Some(true) {
            return Err(format!("container {} is privileged", container.name));
        }
        let caps = context.capabilities.unwrap_or_default();
        let dropped: Vec<&str> = caps.drop.iter().flatten().map(String::as_str).collect();
        let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
        if dropped != ["ALL"] || added != wanted {
            return Err(format!(
                "container {} drops {dropped:?} and adds {added:?}; expected to drop [\"ALL\"] \
                 and add {wanted:?}",
                container.name
            ));
        }
    }
    Ok(())
}

/// The command of the one privileged container: mount bpffs at `bpf.root` unless it is there.
const MOUNT_BPFFS: &str =
    r#"[ "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs ] || mount -t bpf bpf /sys/fs/bpf"#;

/// The init container that mounts bpffs on the host: the only privileged one (Bidirectional
/// propagation requires it), so it must do exactly that: run [`MOUNT_BPFFS`] with the host's
/// `bpf.root` as its only mount, propagated both ways; and the agent, which it serves, must
/// not mount one of its own (`bpf.autoMount.enabled=false`), which would be the pod's.
fn bpffs_mount_container(m: &Manifests) -> Result<&Container, String> {
    let spec = pod_spec(m)?;
    let config = agent_config(m)?;
    let Some(container) = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "mount-bpffs")
    else {
        return Err("no init container mount-bpffs to mount bpffs on the host".into());
    };
    let command: Vec<&str> = container
        .command
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if command != ["/bin/sh", "-c", MOUNT_BPFFS] || container.args.iter().flatten().next().is_some()
    {
        return Err(format!(
            "mount-bpffs is privileged and runs {command:?}: it may only run {MOUNT_BPFFS:?}"
        ));
    }
    let mounts: Vec<_> = container.volume_mounts.iter().flatten().collect();
    let host_bpffs = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| mounts.first().is_some_and(|m| m.name == v.name))
        .and_then(|v| v.host_path.as_ref())
        .map(|h| PathBuf::from(&h.path));
    let propagation = mounts.first().and_then(|m| m.mount_propagation.as_deref());
    if mounts.len() != 1
        || host_bpffs.as_deref() != Some(config.bpf_root())
        || Path::new(&mounts[0].mount_path) != config.bpf_root()
        || propagation != Some("Bidirectional")
    {
        return Err(format!(
            "mount-bpffs must mount only the host's {} at the same path, Bidirectional",
            config.bpf_root().display()
        ));
    }
    if config.values().bpf.auto_mount.enabled {
        return Err(
            "bpf.autoMount.enabled is on: an agent that mounts bpffs itself mounts the pod's, \
             and its pins vanish with the pod"
                .into(),
        );
    }
    Ok(container)
}

fn check_node_name(m: &Manifests) -> Result<(), String> {
    let container = agent_container(m)?;
    let from_downward_api = container.env.iter().flatten().any(|e| {
        e.name == "NODE_NAME"
            && e.value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .is_some_and(|f| f.field_path == "spec.nodeName")
    });
    if from_downward_api {
        Ok(())
    } else {
        Err("NODE_NAME is not set from the downward API's spec.nodeName".into())
    }
}

/// The host directories the agent's options name are the host's own, at the same path, so
/// pins outlive the pod, the socket hooks attach to the host's cgroup root and `lbctl cleanup`
/// on the node reads the paths the agent recorded.
fn check_host_mounts(m: &Manifests) -> Result<(), String> {
    let config = agent_config(m)?;
    let container = agent_container(m)?;
    let spec = pod_spec(m)?;
    let needed = [
        ("bpf.root", config.bpf_root().to_owned()),
        ("cgroup.hostRoot", config.cgroup_root()),
        (
            "the state directory",
            PathBuf::from(lb::agent::DEFAULT_STATE_DIR),
        ),
    ];
    for (what, path) in needed {
        let host_path = container
            .volume_mounts
            .iter()
            .flatten()
            .filter(|v| Path::new(&v.mount_path) == path)
            .find_map(|v| {
                spec.volumes
                    .iter()
                    .flatten()
                    .find(|vol| vol.name == v.name)?
                    .host_path
                    .as_ref()
            });
        if host_path.map(|h| Path::new(&h.path)) != Some(&path) {
            return Err(format!(
                "{what} ({}) is not the host's {0} mounted at the same path",
                path.display()
            ));
        }
    }
    Ok(())
}

fn check_scheduling(m: &Manifests) -> Result<(), String> {
    let spec = pod_spec(m)?;
    if spec.priority_class_name.as_deref() != Some("system-node-critical") {
        return Err(format!(
            "priorityClassName is {:?}, expected system-node-critical",
            spec.priority_class_name
        ));
    }
    let tolerates_all =
        spec.tolerations.iter().flatten().any(|t| {
            t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()
        });
    if !tolerates_all {
        return Err("no toleration of every taint (operator: Exists, no key, no effect)".into());
    }
    Ok(())
}

type Check = fn(&Manifests) -> Result<(), String>;

const CHECKS: &[(&str, Check)] = &[
    ("rbac rules", check_rbac_rules),
    ("binding", check_binding),
    ("service account", check_runs_as_service_account),
    ("values", |m| agent_config(m).map(drop)),
    ("probes", check_probes),
    ("security", check_security),
    ("node name", check_node_name),
    ("host mounts", check_host_mounts),
    ("scheduling", check_scheduling),
];

#[test]
fn every_manifest_parses_into_its_type() {
    assert!(!manifest_files().is_empty(), "no manifests in deploy/");
    manifests();
}

#[test]
fn the_manifests_pass_every_check() {
    let m = manifests();
    let failures: Vec<String> = CHECKS
        .iter()
        .filter_map(|(name, check)| check(&m).err().map(|e| format!("{name}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Asserts that `check` refuses the manifests once `break_them` has changed them, and that
/// the error says `expected`.
fn refused(check: Check, break_them: impl FnOnce(&mut Manifests), expected: &str) {
    let mut m = manifests();
    check(&m).expect("the manifests pass before they are broken");
    break_them(&mut m);
    let err = check(&m).expect_err("the broken manifests pass");
    assert!(err.contains(expected), "{err}");
}

fn agent_container_mut(m: &mut Manifests) -> &mut Container {
    let spec = m.daemon_set.spec.as_mut().unwrap();
    let pod = spec.template.spec.as_mut().unwrap();
    pod.containers
        .iter_mut()
        .find(|c| c.name == "lb-agent")
        .unwrap()
}

fn pod_spec_mut(m: &mut Manifests) -> &mut PodSpec {
    let spec = m.daemon_set.spec.as_mut().unwrap();
    spec.template.spec.as_mut().unwrap()
}

fn values_mut(m: &mut Manifests) -> &mut String {
    m.config_map
        .data
        .as_mut()
        .unwrap()
        .get_mut("values.yaml")
        .unwrap()
}

#[test]
fn unknown_fields_and_kinds_are_refused() {
    let dir = std::env::temp_dir().join(format!("lb-deploy-manifests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let try_with = |name: &str, text: &str| {
        let mut files = manifest_files();
        let extra = dir.join(name);
        std::fs::write(&extra, text).unwrap();
        files.retain(|f| f.file_name() != extra.file_name());
        files.push(extra);
        parse_all(&files).unwrap_err()
    };
    let misplaced = std::fs::read_to_string(deploy_dir().join("00-serviceaccount.yaml"))
        .unwrap()
        .replace("  labels:", "  hostNetwork: true\n  labels:");
    let err = try_with("00-serviceaccount.yaml", &misplaced);
    assert!(err.contains(".metadata.hostNetwork"), "{err}");
    let err = try_with(
        "99-service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
    );
    assert!(err.contains("unexpected kind \"Service\""), "{err}");
    let err = try_with(
        "99-second.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\n",
    );
    assert!(err.contains("a second document"), "{err}");
    let err = try_with(
        "99-bad-type.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [x]}\n",
    );
    assert!(err.contains("metadata.name"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rbac_check_rejects_more_or_less_than_the_agent_calls() {
    refused(
        check_rbac_rules,
        |m| m.role.rules.as_mut().unwrap()[0].verbs.push("get".into()),
        "\"get\"",
    );
    refused(
        check_rbac_rules,
        |m| {
            let rules = m.role.rules.as_mut().unwrap();
            let rule = rules
                .iter_mut()
                .find(|r| r.resources.iter().flatten().any(|x| x == "endpointslices"))
                .unwrap();
            rule.resources = Some(vec!["endpoints".into()]);
        },
        "endpointslices",
    );
    refused(
        check_rbac_rules,
        |m| m.role.rules.as_mut().unwrap()[0].resources = Some(vec!["*".into()]),
        "wildcard",
    );
    refused(
        check_rbac_rules,
        |m| m.role.rules.as_mut().unwrap()[0].api_groups = Some(vec!["apps".into()]),
        "\"apps\"",
    );
}

#[test]
fn binding_check_rejects_another_role_or_account() {
    refused(
        check_binding,
        |m| m.binding.role_ref.name = "cluster-admin".into(),
        "cluster-admin",
    );
    refused(
        check_binding,
        |m| m.binding.subjects.as_mut().unwrap()[0].namespace = Some("default".into()),
        "default",
    );
}

#[test]
fn service_account_check_rejects_another_account() {
    refused(
        check_runs_as_service_account,
        |m| pod_spec_mut(m).service_account_name = Some("default".into()),
        "\"default\"",
    );
}

#[test]
fn values_check_rejects_what_the_agent_refuses() {
    let values_check: Check = |m| agent_config(m).map(drop);
    refused(
        values_check,
        |m| values_mut(m).push_str("kubeProxyReplacment: true\n"),
        "kubeProxyReplacment",
    );
    refused(
        values_check,
        |m| *values_mut(m) = values_mut(m).replace("6443", "0"),
        "k8sServicePort",
    );
    refused(
        values_check,
        |m| {
            let c = agent_container_mut(m);
            c.command = Some(vec!["/usr/local/bin/lb-agent".into()]);
        },
        "--values",
    );
}

#[test]
fn probe_check_rejects_another_port_or_path() {
    refused(
        check_probes,
        |m| *values_mut(m) = values_mut(m).replace(":10256", ":10257"),
        "port 10257",
    );
    refused(
        check_probes,
        |m| {
            let probe = agent_container_mut(m).readiness_probe.as_mut().unwrap();
            probe.http_get.as_mut().unwrap().path = Some("/livez".into());
        },
        "readinessProbe",
    );
    refused(
        check_probes,
        |m| agent_container_mut(m).liveness_probe = None,
        "livenessProbe",
    );
}

#[test]
fn security_check_rejects_privileged_or_other_capabilities() {
    refused(
        check_security,
        |m| {
            let context = agent_container_mut(m).security_context.as_mut().unwrap();
            context.privileged = Some(true);
        },
        "privileged",
    );
    refused(
        check_security,
        |m| {
            let context = agent_container_mut(m).security_context.as_mut().unwrap();
            let caps = context.capabilities.as_mut().unwrap();
            caps.add.as_mut().unwrap().push("SYS_MODULE".into());
        },
        "SYS_MODULE",
    );
    refused(
        check_security,
        |m| {
            let context = agent_container_mut(m).security_context.as_mut().unwrap();
            context.capabilities.as_mut().unwrap().drop = None;
        },
        "drops []",
    );
    refused(
        check_security,
        |m| pod_spec_mut(m).host_network = None,
        "hostNetwork",
    );
}

fn bpffs_mount_mut(m: &mut Manifests) -> &mut Container {
    pod_spec_mut(m)
        .init_containers
        .iter_mut()
        .flatten()
        .find(|c| c.name == "mount-bpffs")
        .unwrap()
}

#[test]
fn the_privileged_init_container_may_only_mount_bpffs_for_an_agent_that_does_not() {
    refused(
        check_security,
        |m| bpffs_mount_mut(m).command = Some(vec!["/bin/sh".into(), "-c".into(), "id".into()]),
        "may only run",
    );
    refused(
        check_security,
        |m| {
            bpffs_mount_mut(m).volume_mounts.as_mut().unwrap()[0].mount_propagation =
                Some("HostToContainer".into());
        },
        "Bidirectional",
    );
    refused(
        check_security,
        |m| {
            *values_mut(m) = values_mut(m).replace(
                "root: /sys/fs/bpf\n  autoMount:\n    enabled: false",
                "root: /sys/fs/bpf\n  autoMount:\n    enabled: true",
            );
        },
        "bpf.autoMount.enabled",
    );
    refused(
        check_security,
        |m| bpffs_mount_mut(m).name = "setup".into(),
        "no init container mount-bpffs",
    );
}

#[test]
fn node_name_check_rejects_a_fixed_name() {
    refused(
        check_node_name,
        |m| {
            let env = agent_container_mut(m).env.as_mut().unwrap();
            let node = env.iter_mut().find(|e| e.name == "NODE_NAME").unwrap();
            node.value_from = None;
            node.value = Some("node-1".into());
        },
        "NODE_NAME",
    );
}

#[test]
fn host_mount_check_rejects_a_missing_or_moved_mount() {
    refused(
        check_host_mounts,
        |m| {
            let mounts = agent_container_mut(m).volume_mounts.as_mut().unwrap();
            mounts.retain(|v| v.mount_path != "/sys/fs/bpf");
        },
        "bpf.root",
    );
    refused(
        check_host_mounts,
        |m| *values_mut(m) = values_mut(m).replace("hostRoot: /sys/fs/cgroup", "hostRoot: /x"),
        "cgroup.hostRoot (/x)",
    );
    refused(
        check_host_mounts,
        |m| {
            let volumes = pod_spec_mut(m).volumes.as_mut().unwrap();
            let state = volumes.iter_mut().find(|v| v.name == "state").unwrap();
            state.host_path.as_mut().unwrap().path = "/var/lib/lb-agent".into();
        },
        "state directory",
    );
}

#[test]
fn scheduling_check_rejects_a_narrow_toleration_or_priority() {
    refused(
        check_scheduling,
        |m| pod_spec_mut(m).tolerations.as_mut().unwrap()[0].key = Some("node-role".into()),
        "toleration",
    );
    refused(
        check_scheduling,
        |m| pod_spec_mut(m).priority_class_name = None,
        "system-node-critical",
    );
}
