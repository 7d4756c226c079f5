//! The test API server behaves as Kubernetes' does where lb's agent and the end-to-end tests
//! depend on it, driven with Debian's kubectl: apply (client- and server-side), the status
//! subresources, resourceVersions, watch bookmarks, 410 Gone after compaction, pods selected
//! by `spec.nodeName`, and every kind it serves.
//!
//! They need `cargo xtask apiserver` to have run; without it they fail naming that command.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e::ApiServer;
use serde_json::Value;

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: 8080
";

const SLICE: &str = "\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: true}
";

fn resource_version(object: &Value) -> Result<u64> {
    let rv = object["metadata"]["resourceVersion"]
        .as_str()
        .with_context(|| format!("no resourceVersion in {object}"))?;
    rv.parse()
        .with_context(|| format!("resourceVersion {rv:?} is not a number"))
}

#[test]
fn kubectl_apply_then_get_shows_resource_versions_and_server_side_apply_works() -> Result<()> {
    let server = ApiServer::start()?;
    let kubectl = server.kubectl();
    kubectl.apply(&format!("{SERVICE}---\n{SLICE}"), &[])?;

    let svc = kubectl.get_json(&["service", "web"])?;
    let slice = kubectl.get_json(&["endpointslices.discovery.k8s.io", "web-abc"])?;
    let svc_rv = resource_version(&svc)?;
    let slice_rv = resource_version(&slice)?;
    ensure!(
        svc_rv != slice_rv,
        "two writes share resourceVersion {svc_rv}"
    );
    // Defaults a load balancer reads.
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(slice["endpoints"][0]["addresses"][0], "10.0.0.1");
    // Selecting slices by service label, as the agent does.
    let by_label = kubectl.get_json(&[
        "endpointslices.discovery.k8s.io",
        "-l",
        "kubernetes.io/service-name=web",
    ])?;
    assert_eq!(by_label["items"].as_array().map(Vec::len), Some(1));

    // Server-side apply takes the port change and records kubectl as its manager.
    let changed = SERVICE.replace("port: 80", "port: 81");
    kubectl.apply(
        &changed,
        &["--server-side", "--force-conflicts", "--field-manager=e2e"],
    )?;
    let svc = kubectl.get_json(&["service", "web", "--show-managed-fields"])?;
    assert_eq!(svc["spec"]["ports"][0]["port"], 81);
    ensure!(
        resource_version(&svc)? > svc_rv,
        "the apply did not advance the resourceVersion"
    );
    let managers: Vec<&str> = svc["metadata"]["managedFields"]
        .as_array()
        .context("no managedFields")?
        .iter()
        .filter(|m| m["operation"] == "Apply")
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["e2e"]);

    // The status subresource changes the status only; a spec apply leaves the status alone.
    kubectl.run(
        &[
            "patch",
            "service",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.7"}]}},"spec":{"type":"NodePort"}}"#,
        ],
        None,
    )?;
    kubectl.apply(
        &changed.replace("port: 81", "port: 82"),
        &["--server-side", "--field-manager=e2e"],
    )?;
    let svc = kubectl.get_json(&["service", "web"])?;
    assert_eq!(
        svc["status"]["loadBalancer"]["ingress"][0]["ip"],
        "192.0.2.7"
    );
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["ports"][0]["port"], 82);
    Ok(())
}

#[test]
fn a_watch_with_bookmarks_receives_a_bookmark_when_other_resources_change() -> Result<()> {
    let server = ApiServer::start()?;
    let kubectl = server.kubectl();
    kubectl.apply(SERVICE, &[])?;
    let list: Value = serde_json::from_str(&kubectl.run(
        &["get", "--raw", "/api/v1/namespaces/default/services"],
        None,
    )?)?;
    let rv = resource_version(&list)?;
    let mut watch = kubectl.watch(&format!(
        "/api/v1/namespaces/default/services?watch=1&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=6"
    ))?;
    // The server sends a bookmark ahead of the watch's timeout (6 s) when the store has moved
    // past the watch's start. A write elsewhere moves the store's resourceVersion past the watch's start; the services
    // watch learns it from a bookmark, with no service event.
    kubectl.apply(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n",
        &[],
    )?;
    let node_rv = resource_version(&kubectl.get_json(&["node", "node-a"])?)?;
    let event = watch.next(Instant::now() + Duration::from_secs(90))?;
    assert_eq!(event["type"], "BOOKMARK", "{event}");
    ensure!(
        resource_version(&event["object"])? >= node_rv,
        "bookmark behind the node's write at {node_rv}: {event}"
    );
    Ok(())
}

#[test]
fn a_watch_from_a_compacted_resource_version_is_gone() -> Result<()> {
    let mut server = ApiServer::start()?;
    let kubectl = server.kubectl();
    kubectl.apply(SERVICE, &[])?;
    let old = resource_version(&kubectl.get_json(&["service", "web"])?)?;
    kubectl.apply(&SERVICE.replace("port: 80", "port: 81"), &[])?;
    let compacted: Value = serde_json::from_str(&kubectl.run(
        &["create", "--raw", "/lbtest/compact", "-f", "-"],
        Some("{}"),
    )?)?;
    ensure!(
        compacted["revision"].as_u64() > Some(old),
        "compaction did not pass {old}: {compacted}"
    );
    // The watch cache keeps recent history in memory (as kube-apiserver's does) whatever
    // etcd compacted; a restart starts it afresh from etcd, where `old` is gone.
    server.restart()?;
    let kubectl = server.kubectl();
    let mut watch = kubectl.watch(&format!(
        "/api/v1/namespaces/default/services?watch=1&resourceVersion={old}"
    ))?;
    let error = watch.until("ERROR", Instant::now() + Duration::from_secs(30))?;
    assert_eq!(error["object"]["code"], 410, "{error}");
    assert_eq!(error["object"]["reason"], "Expired", "{error}");
    // A list at exactly that version goes to etcd, which compacted it.
    let (ok, _, err) = kubectl.output(
        &[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/services?resourceVersion={old}&resourceVersionMatch=Exact"),
        ],
        None,
    )?;
    ensure!(
        !ok && err.contains("Expired"),
        "a list at compacted {old}: {err}"
    );
    Ok(())
}

#[test]
fn pods_nodes_and_namespaces_are_served_with_their_status() -> Result<()> {
    let server = ApiServer::start()?;
    let kubectl = server.kubectl();
    kubectl.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop, labels: {app: web}}\n\
         spec:\n  nodeName: node-a\n  containers: [{name: web, image: nginx}]\n",
        &[],
    )?;
    kubectl.run(
        &[
            "patch",
            "pod",
            "web-0",
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running","podIP":"10.1.0.5"}}"#,
        ],
        None,
    )?;
    kubectl.run(
        &[
            "patch",
            "node",
            "node-a",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"addresses":[{"type":"InternalIP","address":"192.168.1.10"}]}}"#,
        ],
        None,
    )?;
    let pods = kubectl.get_json(&["pods", "-A", "-l", "app=web"])?;
    let pod = &pods["items"][0];
    assert_eq!(pod["metadata"]["namespace"], "shop");
    assert_eq!(pod["status"]["podIP"], "10.1.0.5");
    assert_eq!(pod["spec"]["nodeName"], "node-a");
    let node = kubectl.get_json(&["node", "node-a"])?;
    assert_eq!(node["status"]["addresses"][0]["address"], "192.168.1.10");
    let namespaces = kubectl.get_json(&["namespaces"])?;
    let mut names: Vec<&str> = namespaces["items"]
        .as_array()
        .context("no namespace items")?
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["default", "kube-system", "shop"]);
    Ok(())
}

#[test]
fn pods_are_selected_by_node_name_as_the_agent_lists_them() -> Result<()> {
    let server = ApiServer::start()?;
    let kubectl = server.kubectl();
    let pod = |name: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  nodeName: {node}\n  containers: [{{name: c, image: nginx}}]\n"
        )
    };
    kubectl.apply(
        &format!("{}---\n{}", pod("a-0", "node-a"), pod("b-0", "node-b")),
        &[],
    )?;
    let on_a = kubectl.get_json(&["pods", "--field-selector", "spec.nodeName=node-a"])?;
    let names: Vec<&str> = on_a["items"]
        .as_array()
        .context("no pod items")?
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["a-0"]);
    // A field the real server does not index is refused, naming the ones it does.
    let (ok, _, err) = kubectl.output(
        &["get", "pods", "--field-selector", "spec.hostname=x"],
        None,
    )?;
    ensure!(
        !ok && err.contains("spec.nodeName"),
        "an unknown field selector: {err}"
    );
    Ok(())
}
