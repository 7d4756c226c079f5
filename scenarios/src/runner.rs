//! Replaying a scenario's steps on a [`World`] and checking what each step expects.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_yaml::Value;

use crate::spec::{Connect, Expect, Scenario, Step, TraceExpect, Transport};
use crate::world::{Answer, CallError, Traced, World};

/// The Kubernetes objects a scenario's agents see: its objects plus a Node per node.
pub fn initial_objects(scenario: &Scenario) -> Vec<Value> {
    let mut objects = scenario.objects.clone();
    for node in &scenario.topology.nodes {
        let mut addresses = vec![format!(
            "{{type: InternalIP, address: \"{}\"}}",
            node.address
        )];
        if let Some(v6) = node.address6 {
            addresses.push(format!("{{type: InternalIP, address: \"{v6}\"}}"));
        }
        let yaml = format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\nstatus: {{addresses: [{}]}}\n",
            node.name,
            addresses.join(", ")
        );
        objects.push(serde_yaml::from_str(&yaml).expect("a generated Node is valid YAML"));
    }
    objects
}

/// Runs every step; the error names the step and what differed.
pub fn run(scenario: &Scenario, world: &mut dyn World) -> Result<()> {
    let mut objects = initial_objects(scenario);
    for (i, step) in scenario.steps.iter().enumerate() {
        run_step(step, world, &mut objects)
            .with_context(|| format!("step {} ({})", i + 1, describe(step)))?;
    }
    Ok(())
}

fn describe(step: &Step) -> String {
    if let Some(c) = &step.connect {
        if c.source_ports.is_empty() {
            format!("{:?} from {} to {} x{}", c.transport, c.from, c.to, c.times)
        } else {
            format!(
                "{:?} from {} ports {:?} to {}",
                c.transport, c.from, c.source_ports, c.to
            )
        }
    } else if let Some(o) = &step.open {
        format!(
            "open {} ({:?} from {} to {})",
            o.id, o.transport, o.from, o.to
        )
    } else if let Some(r) = &step.send {
        format!("send on {}", r.id)
    } else if let Some(r) = &step.close {
        format!("close {}", r.id)
    } else if let Some(b) = &step.bind {
        format!("bind {:?} {} on {}", b.transport, b.addr, b.on)
    } else if let Some(s) = &step.sysctl {
        format!("sysctl {} on {}", s.key, s.on)
    } else if let Some(p) = &step.pmtu {
        format!(
            "path MTU probe from {} to {} with {} bytes",
            p.from, p.to, p.size
        )
    } else if !step.restart_agent.is_empty() {
        format!("restart agent on {}", step.restart_agent.join(", "))
    } else if let Some(r) = &step.reroute {
        format!("reroute {} on {} via {}", r.to, r.on, r.via)
    } else if let Some(s) = step.wait_seconds {
        format!("wait {s}s")
    } else if !step.apply.is_empty() || !step.delete.is_empty() {
        "apply/delete objects".to_owned()
    } else {
        "checks".to_owned()
    }
}

fn run_step(step: &Step, world: &mut dyn World, objects: &mut Vec<Value>) -> Result<()> {
    if let Some(call) = &step.connect {
        let mut results = Vec::new();
        if let Some(want) = &step.expect.trace {
            let (result, traced) = world.connect_traced(call)?;
            results.push(result);
            check_trace(want, call.transport, &traced)?;
        } else if !call.source_ports.is_empty() {
            for &port in &call.source_ports {
                let one = Connect {
                    source_ports: vec![port],
                    ..call.clone()
                };
                results.push(world.connect(&one)?);
            }
        } else {
            for _ in 0..call.times {
                results.push(world.connect(call)?);
            }
        }
        check_calls(&step.expect, &results)?;
    }
    if let Some(open) = &step.open {
        check_calls(&step.expect, &[world.open(open)?])?;
    }
    if let Some(held) = &step.send {
        check_calls(&step.expect, &[world.send(&held.id)?])?;
    }
    if let Some(held) = &step.close {
        world.close(&held.id)?;
    }
    if let Some(bind) = &step.bind {
        let result = world.bind(bind)?;
        check_error(&step.expect, result.err().as_ref())?;
    }
    if let Some(read) = &step.sysctl {
        let value = world.sysctl(&read.on, &read.key)?;
        if let Some(want) = &step.expect.value {
            ensure!(
                value.trim() == want.trim(),
                "{} on {} is {:?}, expected {want:?}",
                read.key,
                read.on,
                value.trim()
            );
        }
    }
    if let Some(probe) = &step.pmtu {
        let mtu = world.path_mtu(probe)?;
        if let Some(want) = step.expect.path_mtu {
            ensure!(
                mtu == want,
                "the path MTU from {} to {} is {mtu}, expected {want}",
                probe.from,
                probe.to
            );
        }
    }
    if !step.apply.is_empty() || !step.delete.is_empty() {
        for object in &step.apply {
            let id = object_id(object)?;
            objects.retain(|o| object_id(o).ok().as_ref() != Some(&id));
            objects.push(object.clone());
        }
        for id in &step.delete {
            let before = objects.len();
            objects.retain(|o| object_id(o).ok().as_deref() != Some(id.as_str()));
            ensure!(objects.len() < before, "delete {id}: no such object");
        }
        world.set_objects(objects)?;
    }
    for node in &step.restart_agent {
        world.restart_agent(node)?;
    }
    if let Some(r) = &step.reroute {
        world.reroute(r)?;
    }
    if let Some(seconds) = step.wait_seconds {
        world.wait(Duration::from_secs(seconds))?;
    }
    if let Some(want) = &step.expect.frontends {
        for (node, frontends) in want {
            let have = world.frontends(node)?;
            ensure!(
                &have == frontends,
                "frontends on {node}: expected {frontends:?}, lbctl service list shows {have:?}"
            );
        }
    }
    if let Some(want) = &step.expect.drops {
        for (node, reasons) in want {
            let mut have = world.drops(node)?;
            let mut want = reasons.clone();
            have.sort();
            want.sort();
            ensure!(
                have == want,
                "drop counters on {node}: expected {want:?} to have counted, \
                 lbctl status shows {have:?}"
            );
        }
    }
    if let Some(want) = &step.expect.neighbours {
        for (node, entries) in want {
            let mut entries = entries.clone();
            entries.sort();
            let have = world.neighbours(node, &entries)?;
            ensure!(
                have == entries,
                "neighbour entries on {node}: expected {entries:?}, the table has {have:?}"
            );
        }
    }
    Ok(())
}

/// `Kind/namespace/name` of an object.
fn object_id(object: &Value) -> Result<String> {
    let kind = object["kind"].as_str().context("object without kind")?;
    let name = object["metadata"]["name"]
        .as_str()
        .context("object without metadata.name")?;
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    Ok(if kind == "Node" {
        format!("{kind}/{name}")
    } else {
        format!("{kind}/{namespace}/{name}")
    })
}

fn check_calls(expect: &Expect, results: &[Result<Answer, CallError>]) -> Result<()> {
    let errors: Vec<&CallError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    match &expect.error {
        Some(want) if want != "none" => {
            ensure!(
                errors.len() == results.len(),
                "expected every call to fail with {want}; {} of {} succeeded",
                results.len() - errors.len(),
                results.len()
            );
            for e in errors {
                ensure!(e.name() == want, "expected {want}, got {}", e.name());
            }
            return Ok(());
        }
        _ => {
            if let Some(e) = errors.first() {
                bail!("a call failed with {} (expected success)", e.name());
            }
        }
    }
    let answers: Vec<&Answer> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let who: BTreeSet<&str> = answers.iter().map(|a| a.answered_by.as_str()).collect();
    if let Some(each) = &expect.answers {
        let got: Vec<&str> = answers.iter().map(|a| a.answered_by.as_str()).collect();
        ensure!(
            got == *each,
            "the calls were answered by {got:?} in turn, expected {each:?}"
        );
    }
    if let Some(allowed) = &expect.answered_by {
        let allowed: BTreeSet<&str> = allowed.iter().map(String::as_str).collect();
        ensure!(
            who.is_subset(&allowed),
            "answered by {who:?}, expected only {allowed:?}"
        );
        if answers.len() > 1 && expect.sticky != Some(true) {
            ensure!(
                who == allowed,
                "over {} calls only {who:?} answered; expected each of {allowed:?}",
                answers.len()
            );
        }
    }
    if expect.sticky == Some(true) {
        ensure!(
            who.len() <= 1,
            "expected one backend for every call, saw {who:?}"
        );
    }
    if let Some(source) = expect.seen_source {
        for a in &answers {
            ensure!(
                a.seen_source == source,
                "{} saw the call come from {}, expected {source}",
                a.answered_by,
                a.seen_source
            );
        }
    }
    if let Some(sources) = &expect.seen_sources {
        for a in &answers {
            let want = sources.get(&a.answered_by).with_context(|| {
                format!(
                    "{} answered, but seen_sources names only {:?}",
                    a.answered_by,
                    sources.keys().collect::<Vec<_>>()
                )
            })?;
            ensure!(
                a.seen_source == *want,
                "{} saw the call come from {}, expected {want}",
                a.answered_by,
                a.seen_source
            );
        }
    }
    if let Some(peer) = expect.peer_name {
        for a in &answers {
            ensure!(
                a.peer_name == peer,
                "the application saw peer {} (answered by {}), expected {peer}",
                a.peer_name,
                a.answered_by
            );
        }
    }
    Ok(())
}

fn check_error(expect: &Expect, error: Option<&CallError>) -> Result<()> {
    match (expect.error.as_deref(), error) {
        (None | Some("none"), None) => Ok(()),
        (None | Some("none"), Some(e)) => bail!("failed with {} (expected success)", e.name()),
        (Some(want), None) => bail!("succeeded, expected {want}"),
        (Some(want), Some(e)) => {
            ensure!(e.name() == want, "expected {want}, got {}", e.name());
            Ok(())
        }
    }
}

/// The caller's events, as an operator picks them out by cgroup id: the expected kinds and
/// addresses in order, the call's protocol, and one socket cookie throughout.
fn check_trace(want: &[TraceExpect], transport: Transport, traced: &Traced) -> Result<()> {
    let mine: Vec<_> = traced
        .events
        .iter()
        .filter(|e| e.cgroup_id == traced.caller_cgroup)
        .collect();
    let shown = |events: &[&lb::views::TraceSockEvent]| {
        events
            .iter()
            .map(|e| format!("{} {} {}", e.kind, e.dst, e.protocol))
            .collect::<Vec<_>>()
    };
    let expected: Vec<(&str, std::net::SocketAddr)> =
        want.iter().map(|w| (w.event.name(), w.dst)).collect();
    let seen: Vec<(&str, std::net::SocketAddr)> = mine.iter().map(|e| (e.kind, e.dst)).collect();
    ensure!(
        seen == expected,
        "trace-sock events of the caller's cgroup {}: {:?}, expected {expected:?} ({} events from every cgroup)",
        traced.caller_cgroup,
        shown(&mine),
        traced.events.len()
    );
    let protocol = if transport == Transport::Tcp {
        "tcp"
    } else {
        "udp"
    };
    for event in &mine {
        ensure!(
            event.protocol == protocol,
            "event {} {} shows protocol {}, the call was {protocol}",
            event.kind,
            event.dst,
            event.protocol
        );
    }
    let cookies: BTreeSet<u64> = mine.iter().map(|e| e.sock_cookie).collect();
    ensure!(
        cookies.len() <= 1 && !cookies.contains(&0),
        "one call's events should share one non-zero socket cookie, saw {cookies:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    fn expecting(error: &str) -> Expect {
        Expect {
            error: Some(error.to_owned()),
            ..Expect::default()
        }
    }

    #[test]
    fn each_errno_is_its_own_kind_and_a_different_kind_fails_the_check() {
        let kinds = [
            (Errno::ECONNREFUSED, "ECONNREFUSED"),
            (Errno::ETIMEDOUT, "timeout"),
            (Errno::EAGAIN, "timeout"),
            (Errno::EINPROGRESS, "timeout"),
            (Errno::EHOSTUNREACH, "unreachable"),
            (Errno::ENETUNREACH, "unreachable"),
        ];
        for (errno, kind) in kinds {
            let result = [Err(CallError::from_errno(errno))];
            check_calls(&expecting(kind), &result)
                .unwrap_or_else(|e| panic!("{errno:?} as {kind}: {e:#}"));
            for (_, other) in kinds.iter().filter(|(_, k)| *k != kind) {
                let e = check_calls(&expecting(other), &result).unwrap_err();
                assert_eq!(e.to_string(), format!("expected {other}, got {kind}"));
            }
        }
    }

    #[test]
    fn seen_sources_checks_each_backend_against_its_own_address() {
        let answer = |by: &str, source: [u8; 4]| {
            Ok(Answer {
                answered_by: by.to_owned(),
                peer_name: "192.168.56.11:31940".parse().unwrap(),
                seen_source: source.into(),
            })
        };
        let expect = Expect {
            seen_sources: Some(
                [
                    ("local".to_owned(), [192, 168, 56, 100].into()),
                    ("remote".to_owned(), [192, 168, 56, 11].into()),
                ]
                .into(),
            ),
            ..Expect::default()
        };
        let good = [
            answer("local", [192, 168, 56, 100]),
            answer("remote", [192, 168, 56, 11]),
        ];
        check_calls(&expect, &good).unwrap();
        let swapped = [answer("remote", [192, 168, 56, 100])];
        let e = check_calls(&expect, &swapped).unwrap_err();
        assert_eq!(
            e.to_string(),
            "remote saw the call come from 192.168.56.100, expected 192.168.56.11"
        );
        let unnamed = [answer("other", [192, 168, 56, 100])];
        let e = check_calls(&expect, &unnamed).unwrap_err();
        assert!(
            e.to_string()
                .contains("other answered, but seen_sources names only"),
            "{e}"
        );
    }

    #[test]
    fn a_bind_failing_with_another_kind_fails_the_check() {
        let timed_out = CallError::from_errno(Errno::EAGAIN);
        let e = check_error(&expecting("unreachable"), Some(&timed_out)).unwrap_err();
        assert_eq!(e.to_string(), "expected unreachable, got timeout");
    }
}
