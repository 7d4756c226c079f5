//! The answer to one request: which endpoint a path is, and its status, headers and JSON body
//! as kube-proxy's health server gives them.

use std::time::SystemTime;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::HealthState;

/// Go's zero time as kube-proxy prints a `lastUpdated` that never happened.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A path the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/healthz`: the agent keeps up *and* this node should receive traffic (load balancers'
    /// health checks).
    Healthz,
    /// `/livez`: the agent keeps up, whatever the node's state (kubelet's liveness probe).
    Livez,
}

impl Endpoint {
    /// The endpoint at exactly `path` (a query string is not part of it), as kube-proxy's mux
    /// matches its two patterns; any other path is none.
    pub fn for_path(path: &str) -> Option<Self> {
        match path {
            "/healthz" => Some(Endpoint::Healthz),
            "/livez" => Some(Endpoint::Livez),
            _ => None,
        }
    }
}

/// A response, ready to send. Every response also carries `X-Content-Type-Options: nosniff`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// 200, 503 or 404.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// The `X-Load-Balancing-Endpoint-Weight` header: only a service health check sends it.
    pub endpoint_weight: Option<usize>,
}

/// The body of `/healthz` and `/livez`, fields in kube-proxy's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    /// Now when healthy (kube-proxy keeps the old "the loop just ran" meaning), otherwise the
    /// last time the maps were brought up to date.
    last_updated: String,
    current_time: String,
    /// Only in `/healthz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    node_eligible: Option<bool>,
    /// The agent's own health, without the node's eligibility.
    healthy: bool,
}

/// The answer to a request for `path` given `state` at `now`. The method does not matter: like
/// kube-proxy's mux (patterns without a method), every method gets the same answer, and the
/// HTTP layer leaves the body out for `HEAD`.
pub fn respond(state: &HealthState, now: SystemTime, path: &str) -> Answer {
    let Some(endpoint) = Endpoint::for_path(path) else {
        return Answer {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: "404 page not found\n".to_owned(),
            endpoint_weight: None,
        };
    };
    let healthy = state.healthy(now);
    let node_eligible = match endpoint {
        Endpoint::Healthz => Some(state.node_eligible()),
        Endpoint::Livez => None,
    };
    let ok = healthy && node_eligible.unwrap_or(true);
    let last_updated = if ok { Some(now) } else { state.last_updated() };
    let body = Body {
        last_updated: last_updated.map_or_else(|| GO_ZERO_TIME.to_owned(), rfc3339),
        current_time: rfc3339(now),
        node_eligible,
        healthy,
    };
    Answer {
        status: if ok { 200 } else { 503 },
        content_type: "application/json",
        body: serde_json::to_string(&body).expect("a struct of strings and booleans serializes"),
        endpoint_weight: None,
    }
}

/// `t` in UTC as RFC 3339 with only the fractional digits it needs, as Go's JSON encoding of a
/// `time.Time` (RFC3339Nano) prints it.
fn rfc3339(t: SystemTime) -> String {
    let (secs, nanos) = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i32),
        Err(before) => {
            let d = before.duration();
            (-(d.as_secs() as i64), -(d.subsec_nanos() as i32))
        }
    };
    match Timestamp::new(secs, nanos) {
        Ok(ts) => ts.to_string(),
        // Beyond jiff's range (years ±9999): not a time any clock here reports.
        Err(_) => GO_ZERO_TIME.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(20);

    /// 2026-12-03T08:00:00Z plus `secs` and `nanos`.
    fn at(secs: u64, nanos: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(1_796_284_800 + secs, nanos)
    }

    fn json(answer: &Answer) -> serde_json::Value {
        serde_json::from_str(&answer.body).unwrap()
    }

    #[test]
    fn healthy_and_eligible_is_200_with_last_updated_now() {
        let mut s = HealthState::new(TIMEOUT);
        s.updated(at(0, 0));
        let a = respond(&s, at(5, 250_000_000), "/healthz");
        assert_eq!(a.status, 200);
        assert_eq!(a.content_type, "application/json");
        assert_eq!(
            a.body,
            r#"{"lastUpdated":"2026-12-03T08:00:05.25Z","currentTime":"2026-12-03T08:00:05.25Z","nodeEligible":true,"healthy":true}"#
        );
    }

    #[test]
    fn livez_has_no_node_eligible_field() {
        let s = HealthState::new(TIMEOUT);
        let a = respond(&s, at(0, 0), "/livez");
        assert_eq!(a.status, 200);
        assert_eq!(
            a.body,
            r#"{"lastUpdated":"2026-12-03T08:00:00Z","currentTime":"2026-12-03T08:00:00Z","healthy":true}"#
        );
    }

    #[test]
    fn a_stale_queued_change_is_503_on_both_with_the_real_last_update() {
        let mut s = HealthState::new(TIMEOUT);
        s.updated(at(0, 123_456_789));
        s.queued(at(10, 0));
        for path in ["/healthz", "/livez"] {
            assert_eq!(
                respond(&s, at(29, 0), path).status,
                200,
                "{path} before the timeout"
            );
            let a = respond(&s, at(30, 0), path);
            assert_eq!(a.status, 503, "{path}");
            let body = json(&a);
            assert_eq!(body["healthy"], false, "{path}");
            assert_eq!(body["lastUpdated"], "2026-12-03T08:00:00.123456789Z");
            assert_eq!(body["currentTime"], "2026-12-03T08:00:30Z");
        }
    }

    #[test]
    fn an_ineligible_node_fails_healthz_but_not_livez() {
        let mut s = HealthState::new(TIMEOUT);
        s.updated(at(0, 0));
        s.set_node_eligible(false);
        let healthz = respond(&s, at(1, 0), "/healthz");
        assert_eq!(healthz.status, 503);
        let body = json(&healthz);
        assert_eq!(body["nodeEligible"], false);
        assert_eq!(body["healthy"], true, "the agent itself keeps up");
        assert_eq!(body["lastUpdated"], "2026-12-03T08:00:00Z");
        let livez = respond(&s, at(1, 0), "/livez");
        assert_eq!(livez.status, 200);
        assert_eq!(json(&livez)["lastUpdated"], "2026-12-03T08:00:01Z");
    }

    #[test]
    fn never_updated_and_failing_prints_go_zero_time() {
        let mut s = HealthState::new(TIMEOUT);
        s.set_node_eligible(false);
        let body = json(&respond(&s, at(0, 0), "/healthz"));
        assert_eq!(body["lastUpdated"], "0001-01-01T00:00:00Z");
    }

    #[test]
    fn other_paths_are_404_in_go_words() {
        let s = HealthState::new(TIMEOUT);
        for path in ["/", "/healthz/", "/metrics", "/livez/x", "/HEALTHZ"] {
            let a = respond(&s, at(0, 0), path);
            assert_eq!(a.status, 404, "{path}");
            assert_eq!(a.body, "404 page not found\n");
            assert_eq!(a.content_type, "text/plain; charset=utf-8");
        }
    }
}
