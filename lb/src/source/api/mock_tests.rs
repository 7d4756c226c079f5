//! [`ApiSource`] against a mock API server (tower-test, the way kube-rs tests its runtime):
//! each test scripts the answers to the list and watch requests of the kinds it is about;
//! the other kinds list empty and their watches stay open without events.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc as poke;
use futures::StreamExt;
use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock;

use super::ApiSource;
use crate::k8s::API_ACCESS;
use crate::source::{Change, ClusterStore, Source};

const NODE: &str = "node-a";
const DEADLINE: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Verb {
    List,
    Watch,
}

/// One scripted answer.
enum Reply {
    /// A list page; `next` is its `continue` token.
    List {
        items: Vec<Value>,
        rv: &'static str,
        next: Option<&'static str>,
    },
    /// A watch response: these events, then the end of the stream.
    Watch(Vec<Value>),
    /// A body as it is.
    Raw(Vec<u8>),
}

/// A request the mock received.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    path: String,
    query: String,
    resource: String,
    verb: Verb,
}

#[derive(Default)]
struct Script {
    /// The resources whose requests wait for scripted replies.
    scripted: HashSet<String>,
    /// Resources whose lists fail with 500, always.
    failing: HashSet<String>,
    replies: HashMap<(String, Verb), VecDeque<Reply>>,
    seen: Vec<Seen>,
}

type Waiting = (Seen, mock::SendResponse<Response<Body>>);

struct MockApi {
    script: Arc<Mutex<Script>>,
    poke: poke::UnboundedSender<()>,
}

impl MockApi {
    /// The mock and a source connected to it; `scripted` resources (plural, as in URLs) wait
    /// for [`MockApi::reply`], the others list empty.
    fn start(scripted: &[&str], failing: &[&str]) -> (MockApi, ApiSource) {
        let script = Arc::new(Mutex::new(Script {
            scripted: scripted.iter().map(|s| s.to_string()).collect(),
            failing: failing.iter().map(|s| s.to_string()).collect(),
            ..Script::default()
        }));
        let (poke, pokes) = poke::unbounded();
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let serving = Arc::clone(&script);
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(serve(handle, serving, pokes))
        });
        let source = ApiSource::start(NODE, move || async move {
            Ok((Client::new(service, "default"), "mock".to_owned()))
        })
        .unwrap();
        (MockApi { script, poke }, source)
    }

    fn reply(&self, resource: &str, verb: Verb, reply: Reply) {
        self.script
            .lock()
            .unwrap()
            .replies
            .entry((resource.to_owned(), verb))
            .or_default()
            .push_back(reply);
        self.poke.unbounded_send(()).unwrap();
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }

    /// Waits until a request matching `what` has arrived; returns it.
    fn wait_for_request(&self, what: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.seen().into_iter().find(&what) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no such request; seen: {:#?}",
                self.seen()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

async fn serve(
    mut handle: mock::Handle<Request<Body>, Response<Body>>,
    script: Arc<Mutex<Script>>,
    mut pokes: poke::UnboundedReceiver<()>,
) {
    let mut waiting: Vec<Waiting> = Vec::new();
    loop {
        let arrived = {
            let request = std::pin::pin!(handle.next_request());
            match futures::future::select(request, pokes.next()).await {
                futures::future::Either::Left((None, _)) => return,
                futures::future::Either::Left((Some(r), _)) => Some(r),
                futures::future::Either::Right(_) => None,
            }
        };
        if let Some((request, respond)) = arrived {
            let seen = seen_of(&request);
            script.lock().unwrap().seen.push(seen.clone());
            waiting.push((seen, respond));
        }
        let mut script = script.lock().unwrap();
        let mut still = Vec::new();
        for (seen, respond) in waiting.drain(..) {
            match answer(&mut script, &seen) {
                Some(response) => respond.send_response(response),
                None => still.push((seen, respond)),
            }
        }
        waiting = still;
    }
}

fn seen_of(request: &Request<Body>) -> Seen {
    let uri = request.uri();
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let verb = if query.split('&').any(|p| p == "watch=true") {
        Verb::Watch
    } else {
        Verb::List
    };
    Seen {
        at: Instant::now(),
        resource: path.rsplit('/').next().unwrap_or_default().to_owned(),
        path,
        query,
        verb,
    }
}

/// The response to `seen` now, or `None` to keep it waiting.
fn answer(script: &mut Script, seen: &Seen) -> Option<Response<Body>> {
    if seen.verb == Verb::List && script.failing.contains(&seen.resource) {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "message": "etcd is down", "reason": "InternalError", "code": 500});
        return Some(
            Response::builder()
                .status(500)
                .body(Body::from(serde_json::to_vec(&status).unwrap()))
                .unwrap(),
        );
    }
    let reply = if script.scripted.contains(&seen.resource) {
        script
            .replies
            .get_mut(&(seen.resource.clone(), seen.verb))?
            .pop_front()?
    } else if seen.verb == Verb::List {
        Reply::List {
            items: Vec::new(),
            rv: "1",
            next: None,
        }
    } else {
        return None;
    };
    let body = match reply {
        Reply::List { items, rv, next } => serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "List",
            "metadata": {"resourceVersion": rv, "continue": next},
            "items": items,
        }))
        .unwrap(),
        Reply::Watch(events) => events
            .iter()
            .flat_map(|e| {
                let mut line = serde_json::to_vec(e).unwrap();
                line.push(b'\n');
                line
            })
            .collect(),
        Reply::Raw(body) => body,
    };
    Some(Response::builder().body(Body::from(body)).unwrap())
}

fn service(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default", "resourceVersion": "1",
                        "managedFields": [{"manager": "kubectl"}]},
           "spec": {"clusterIP": ip, "ports": [{"port": 80}]}})
}

fn pod(name: &str, ports: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
           "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "nginx", "ports": ports}]},
           "status": {"phase": "Running", "podIP": "10.1.0.5"}})
}

fn page(items: Vec<Value>, rv: &'static str, next: Option<&'static str>) -> Reply {
    Reply::List { items, rv, next }
}

fn service_names(store: &ClusterStore) -> Vec<String> {
    let mut names: Vec<String> = store
        .objects()
        .services
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    names
}

/// The Service changes received and not yet applied, as `Replace [names]`, `Upsert name` ...
fn service_changes(source: &mut ApiSource) -> Vec<String> {
    source
        .received()
        .iter()
        .filter_map(|c| match c {
            Change::Replace { origin, objects } if origin == "api/Service" => Some(format!(
                "Replace {:?}",
                objects.iter().map(|o| o.key().name).collect::<Vec<_>>()
            )),
            Change::Upsert { origin, object } if origin == "api/Service" => {
                Some(format!("Upsert {}", object.key().name))
            }
            Change::Delete { origin, key } if origin == "api/Service" => {
                Some(format!("Delete {}", key.name))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_first_list_reaches_the_store_only_when_its_last_page_has() {
    let (api, mut source) = MockApi::start(&["services"], &[]);
    api.reply(
        "services",
        Verb::List,
        page(vec![service("a", "10.0.0.1")], "1", Some("p2")),
    );
    api.wait_for_request(|s| s.resource == "services" && s.query.contains("continue=p2"));
    assert_eq!(
        service_changes(&mut source),
        Vec::<String>::new(),
        "nothing of a half-received list"
    );
    api.reply(
        "services",
        Verb::List,
        page(vec![service("b", "10.0.0.2")], "2", None),
    );
    let mut store = ClusterStore::default();
    assert!(source.sync(&mut store).unwrap().changed);
    assert_eq!(service_names(&store), ["a", "b"]);
}

#[test]
fn a_relist_after_410_gone_replaces_the_services_once_without_those_deleted_meanwhile() {
    let (api, mut source) = MockApi::start(&["services"], &[]);
    api.reply(
        "services",
        Verb::List,
        page(
            vec![service("a", "10.0.0.1"), service("b", "10.0.0.2")],
            "1",
            None,
        ),
    );
    let mut store = ClusterStore::default();
    source.sync(&mut store).unwrap();
    assert_eq!(service_names(&store), ["a", "b"]);

    // The watch's resourceVersion was compacted away; b was deleted and c created meanwhile.
    let gone = json!({"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status",
        "status": "Failure", "reason": "Expired", "code": 410,
        "message": "too old resource version: 1 (40)"}});
    api.reply("services", Verb::Watch, Reply::Watch(vec![gone]));
    api.reply(
        "services",
        Verb::List,
        page(vec![service("a", "10.0.0.1")], "41", Some("p2")),
    );
    api.wait_for_request(|s| s.resource == "services" && s.query.contains("continue=p2"));
    assert_eq!(service_changes(&mut source), Vec::<String>::new());
    assert!(!source.sync(&mut store).unwrap().changed);
    assert_eq!(
        service_names(&store),
        ["a", "b"],
        "the old list stays meanwhile"
    );

    api.reply(
        "services",
        Verb::List,
        page(vec![service("c", "10.0.0.3")], "41", None),
    );
    assert!(source.wait_for_change(DEADLINE).unwrap());
    assert_eq!(service_changes(&mut source), [r#"Replace ["a", "c"]"#]);
    assert!(source.sync(&mut store).unwrap().changed);
    assert_eq!(service_names(&store), ["a", "c"]);
}

#[test]
fn failing_requests_are_retried_after_a_growing_back_off() {
    let (api, _source) = MockApi::start(&[], &["services"]);
    let first = api.wait_for_request(|s| s.resource == "services").at;
    // Without a back-off the watcher retries at once: thousands of lists a second. With one
    // that grows, the tries come at 0, ~0.8 s, ~2.4 s, then after 5.6 s.
    let window = Duration::from_secs(4);
    std::thread::sleep(window.saturating_sub(first.elapsed()));
    let tries: Vec<Duration> = api
        .seen()
        .iter()
        .filter(|s| s.resource == "services" && s.at <= first + window)
        .map(|s| s.at - first)
        .collect();
    assert_eq!(
        tries.len(),
        3,
        "lists of services in the first {window:?}: {tries:?}"
    );
    let (first_gap, second_gap) = (tries[1] - tries[0], tries[2] - tries[1]);
    assert!(
        first_gap >= Duration::from_millis(800) && second_gap >= first_gap.mul_f64(1.5),
        "the delays grow: {tries:?}"
    );
}

#[test]
fn bookmarks_move_the_watch_on_without_a_change() {
    let (api, mut source) = MockApi::start(&["services"], &[]);
    api.reply(
        "services",
        Verb::List,
        page(vec![service("a", "10.0.0.1")], "1", None),
    );
    let mut store = ClusterStore::default();
    source.sync(&mut store).unwrap();
    let bookmark = json!({"type": "BOOKMARK", "object": {"apiVersion": "v1", "kind": "Service",
        "metadata": {"resourceVersion": "7"}}});
    api.reply("services", Verb::Watch, Reply::Watch(vec![bookmark]));
    let first_watch = api.wait_for_request(|s| s.resource == "services" && s.verb == Verb::Watch);
    assert!(
        first_watch.query.contains("allowWatchBookmarks=true"),
        "{first_watch:?}"
    );
    api.wait_for_request(|s| {
        s.resource == "services" && s.verb == Verb::Watch && s.query.contains("resourceVersion=7")
    });
    assert_eq!(service_changes(&mut source), Vec::<String>::new());
    assert!(!source.sync(&mut store).unwrap().changed);

    let added = json!({"type": "ADDED", "object": service("d", "10.0.0.4")});
    api.reply("services", Verb::Watch, Reply::Watch(vec![added]));
    assert!(source.wait_for_change(DEADLINE).unwrap());
    assert!(source.sync(&mut store).unwrap().changed);
    assert_eq!(service_names(&store), ["a", "d"]);
}

#[test]
fn only_this_nodes_pods_declaring_a_host_port_reach_the_store() {
    let (api, mut source) = MockApi::start(&["pods"], &[]);
    api.reply(
        "pods",
        Verb::List,
        page(
            vec![
                pod(
                    "with-host-port",
                    json!([{"containerPort": 80, "hostPort": 8080}]),
                ),
                pod("without", json!([{"containerPort": 80}])),
            ],
            "1",
            None,
        ),
    );
    let mut store = ClusterStore::default();
    source.sync(&mut store).unwrap();
    let pods: Vec<String> = store
        .objects()
        .pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(pods, ["with-host-port"]);
    let list = api.wait_for_request(|s| s.resource == "pods");
    assert!(
        list.query
            .contains(&format!("fieldSelector=spec.nodeName%3D{NODE}")),
        "{list:?}"
    );
}

#[test]
fn the_agent_lists_and_watches_exactly_what_api_access_declares() {
    let (api, mut source) = MockApi::start(&[], &[]);
    source.sync(&mut ClusterStore::default()).unwrap();
    for resource in ["services", "endpointslices", "nodes", "pods"] {
        api.wait_for_request(|s| s.resource == resource && s.verb == Verb::Watch);
    }
    let used: BTreeSet<(String, String, &str)> = api
        .seen()
        .iter()
        .map(|s| {
            let group = match s.path.strip_prefix("/apis/") {
                Some(rest) => rest.split('/').next().unwrap().to_owned(),
                None => String::new(),
            };
            let verb = match s.verb {
                Verb::List => "list",
                Verb::Watch => "watch",
            };
            (group, s.resource.clone(), verb)
        })
        .collect();
    let declared: BTreeSet<(String, String, &str)> = API_ACCESS
        .iter()
        .flat_map(|a| {
            a.verbs
                .iter()
                .map(|v| (a.group.to_owned(), a.resource.to_owned(), *v))
        })
        .collect();
    assert_eq!(used, declared);
}

/// The resident memory of this process, from `/proc/self/status` (`VmRSS` or `VmHWM`), in MiB.
fn memory_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024.0
}

/// The issue's size: 10 000 services of 10 backends each, listed through the watch into the
/// store. Run alone (`-- --ignored --exact ...`) so other tests' memory does not count.
#[test]
#[ignore = "measures this process's memory: run alone"]
fn ten_thousand_services_of_ten_backends_add_less_than_100_mib() {
    const SERVICES: usize = 10_000;
    let (api, mut source) = MockApi::start(&["services", "endpointslices"], &[]);
    let service_of = |i: usize| {
        let mut s = service(
            &format!("svc-{i}"),
            &format!("10.96.{}.{}", i / 250, i % 250),
        );
        s["metadata"]["labels"] = json!({"app": format!("svc-{i}")});
        s["metadata"]["annotations"] = json!({
            "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(400)});
        s
    };
    let slice_of = |i: usize| {
        let endpoints: Vec<Value> = (0..10)
            .map(|b| {
                json!({"addresses": [format!("10.{}.{}.{b}", 1 + i / 250, i % 250)],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": "node-b", "zone": "z1",
                "targetRef": {"kind": "Pod", "namespace": "default",
                              "name": format!("svc-{i}-pod-{b}"), "uid": "0000-1111"}})
            })
            .collect();
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("svc-{i}-abcde"), "namespace": "default",
                "resourceVersion": "1",
                "labels": {"kubernetes.io/service-name": format!("svc-{i}"),
                           "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                                   "fieldsV1": {"f:endpoints": {}, "f:ports": {}}}]},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]})
    };
    // Pages of 500, as the watcher asks for them, serialized ahead so that only their bytes
    // (freed as they are answered) are in the process before the lists.
    let mut wire_bytes = 0;
    for (resource, make) in [
        ("services", &service_of as &dyn Fn(usize) -> Value),
        ("endpointslices", &slice_of),
    ] {
        for first in (0..SERVICES).step_by(500) {
            let items: Vec<Value> = (first..first + 500).map(make).collect();
            let next = (first + 500 < SERVICES).then(|| format!("p{}", first + 500));
            let body = serde_json::to_vec(&json!({
                "apiVersion": "v1", "kind": "List",
                "metadata": {"resourceVersion": "1", "continue": next},
                "items": items,
            }))
            .unwrap();
            wire_bytes += body.len();
            api.reply(resource, Verb::List, Reply::Raw(body));
        }
    }
    let before = memory_mib("VmRSS");
    let mut store = ClusterStore::default();
    source.sync(&mut store).unwrap();
    let objects = store.objects();
    assert_eq!(objects.services.len(), SERVICES);
    assert_eq!(objects.endpoint_slices.len(), SERVICES);
    drop(objects);
    let after = memory_mib("VmRSS");
    println!(
        "RSS {before:.1} MiB before the lists, {after:.1} MiB with them in the store, peak {:.1} \
         MiB; {:.1} MiB of lists on the wire",
        memory_mib("VmHWM"),
        wire_bytes as f64 / (1024.0 * 1024.0),
    );
    assert!(after - before < 100.0, "{before:.1} -> {after:.1} MiB");
}
