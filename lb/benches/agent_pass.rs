//! One agent pass in process, at 10 000 Services x 10 backends: what a single EndpointSlice
//! change costs in each stage (store, translation, reconciliation over maps in memory), with
//! the whole translation the agent did before patching (`TranslationCache::translate` over
//! every object) measured side by side as the reference; and the heap each stage holds.
//!
//! `cargo xtask bench agent-pass` (`cargo bench -p lb --bench agent_pass`). Reports, does not
//! assert timing; exits non-zero if the patched translation ever differs from the plain one.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use lb::datapath::MapContents;
use lb::k8s::{translate, LocalNode, TranslateOptions, TranslationCache};
use lb::reconciler::{MemoryMaps, NoSockets, Reconciler};
use lb::source::{Change, ClusterStore, Object};
use serde_json::json;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{in_use, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SERVICES: usize = 10_000;
const BACKENDS: usize = 10;
const CHANGES: usize = 200;

/// Service `i`: a ClusterIP with port 80, as the API server gives it (namespace, resource
/// version, a selector).
fn service(i: usize) -> Object {
    let object = json!({
        "metadata": {"name": format!("svc-{i:05}"), "namespace": "bench", "resourceVersion": "1"},
        "spec": {"clusterIP": format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256),
                 "selector": {"app": format!("svc-{i:05}")},
                 "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}
    });
    Object::Service(Arc::new(serde_json::from_value(object).unwrap()))
}

/// Service `i`'s EndpointSlice with `n` ready endpoints, each with its node and pod reference
/// as the EndpointSlice controller writes them.
fn slice(i: usize, n: usize) -> Object {
    let endpoints: Vec<_> = (0..n)
        .map(|b| {
            json!({"addresses": [format!("10.{}.{}.{}", 128 + b, (i / 256) % 256, i % 256)],
                   "conditions": {"ready": true, "serving": true, "terminating": false},
                   "nodeName": "n1",
                   "targetRef": {"kind": "Pod", "namespace": "bench", "name": format!("svc-{i:05}-{b}")}})
        })
        .collect();
    let object = json!({
        "metadata": {"name": format!("svc-{i:05}-x"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i:05}"),
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "ports": [{"port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    });
    let slice: EndpointSlice = serde_json::from_value(object).unwrap();
    Object::EndpointSlice(Arc::new(slice.into()))
}

/// Runs `f`, returning what it returned and how much more heap is in use after.
fn held<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = in_use();
    let out = f();
    (out, in_use().saturating_sub(before))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    let opts = TranslateOptions::default();
    let node = LocalNode::without_devices("n1");
    let (mut store, store_bytes) = held(|| {
        let objects: Vec<Object> = (0..SERVICES)
            .flat_map(|i| [service(i), slice(i, BACKENDS)])
            .collect();
        let mut store = ClusterStore::default();
        store.apply(Change::Replace {
            origin: "api".into(),
            objects,
        });
        store
    });
    let mut cache = TranslationCache::new();
    let t = Instant::now();
    let (first, translation_bytes) = held(|| cache.translate_store(&store, &node, &opts));
    let first_translation = t.elapsed();
    // Maps in memory stand for the kernel's.
    let mut maps = MemoryMaps {
        contents: MapContents::default(),
        capacity: 262_144,
    };
    let mut reconciler = Reconciler::new(None);
    let t = Instant::now();
    let (_, reconcile_bytes) = held(|| {
        reconciler
            .reconcile(&first.state, &[], &[], &mut maps, &mut NoSockets)
            .expect("the maps have room")
    });
    let first_reconcile = t.elapsed();
    // What the maps in memory hold stands for the kernel's maps, not the agent's heap.
    let (kernel_copy, maps_bytes) = held(|| maps.contents.clone());
    drop(kernel_copy);
    drop(first);

    // The reference: the whole translation over every object, as before patching.
    let mut whole = TranslationCache::new();
    whole.translate(&store.objects(), &node, &opts);

    let mut stages: [Vec<Duration>; 4] = Default::default();
    let mut patched = 0;
    for change in 0..CHANGES {
        let i = (change / 2 * 7919) % SERVICES;
        let backends = if change % 2 == 0 {
            BACKENDS + 1
        } else {
            BACKENDS
        };
        let t = Instant::now();
        store.apply(Change::Upsert {
            origin: "api".into(),
            object: slice(i, backends),
        });
        stages[0].push(t.elapsed());
        let t = Instant::now();
        let translation = cache.translate_store(&store, &node, &opts);
        stages[1].push(t.elapsed());
        patched += usize::from(cache.patched());
        let t = Instant::now();
        let report = reconciler
            .reconcile(&translation.state, &[], &[], &mut maps, &mut NoSockets)
            .expect("the maps have room");
        stages[2].push(t.elapsed());
        assert!(report.maps.written > 0, "change {change} wrote nothing");
        let t = Instant::now();
        let reference = whole.translate(&store.objects(), &node, &opts);
        stages[3].push(t.elapsed());
        if reference.state != translation.state || reference.errors != translation.errors {
            eprintln!("change {change}: the patched translation differs from the whole one");
            return ExitCode::FAILURE;
        }
    }
    let plain = translate(&store.objects(), &node, &opts);
    let last = cache.translate_store(&store, &node, &opts);
    if plain.state != last.state {
        eprintln!("the patched translation differs from the plain one");
        return ExitCode::FAILURE;
    }
    for s in &mut stages {
        s.sort();
    }
    println!(
        "agent pass, {SERVICES} services x {BACKENDS} backends, {CHANGES} single EndpointSlice changes ({patched} patched)"
    );
    println!("  {:<44} {:>10} {:>10}", "stage", "p50", "p99");
    let names = [
        "store: apply the watch event",
        "translate: patch the changed service",
        "reconcile: step over maps in memory",
        "reference: whole translation (as before)",
    ];
    for (name, s) in names.iter().zip(&stages) {
        println!(
            "  {name:<44} {:>10} {:>10}",
            us(percentile(s, 0.5)),
            us(percentile(s, 0.99))
        );
    }
    let ratio =
        percentile(&stages[3], 0.5).as_secs_f64() / percentile(&stages[1], 0.5).as_secs_f64();
    println!("  whole / patched translation (p50): {ratio:.0}x");
    println!(
        "  first pass: translate {:.0} ms, reconcile over empty maps in memory {:.0} ms",
        first_translation.as_secs_f64() * 1e3,
        first_reconcile.as_secs_f64() * 1e3
    );
    println!("heap held at {SERVICES} services:");
    println!(
        "  store (Services and EndpointSlices)   {:>10}",
        mib(store_bytes)
    );
    println!(
        "  translation cache and result          {:>10}",
        mib(translation_bytes)
    );
    println!(
        "  reconciler (held maps, ids)           {:>10}",
        mib(reconcile_bytes.saturating_sub(maps_bytes))
    );
    println!(
        "  (maps in memory standing for the kernel's: {})",
        mib(maps_bytes)
    );
    ExitCode::SUCCESS
}
