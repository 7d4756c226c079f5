//! The histograms' bucket bounds, kube-proxy's, so dashboards and alerts written for
//! kube-proxy's histograms read these the same way.

use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets};

/// `sync_proxy_rules_duration_seconds`' buckets: from 1 ms, doubling, 15 of them (1 ms to
/// about 16 s).
pub fn sync_duration() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 15).collect()
}

/// `network_programming_duration_seconds`' buckets: 0.25 s and 0.5 s, each second from 1 s
/// to 59 s, every 5 s from 60 s to 115 s, every 30 s from 2 min to 5 min.
pub fn network_programming() -> Vec<f64> {
    linear_buckets(0.25, 0.25, 2)
        .chain(linear_buckets(1.0, 1.0, 59))
        .chain(linear_buckets(60.0, 5.0, 12))
        .chain(linear_buckets(120.0, 30.0, 7))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_buckets_are_kube_proxys() {
        let b = sync_duration();
        assert_eq!(b.len(), 15);
        assert_eq!(b[0], 0.001);
        assert_eq!(b[1], 0.002);
        assert_eq!(b[14], 16.384);
        assert!(b.windows(2).all(|w| (w[1] / w[0] - 2.0).abs() < 1e-9));
    }

    #[test]
    fn network_programming_buckets_are_kube_proxys() {
        let b = network_programming();
        assert_eq!(b.len(), 2 + 59 + 12 + 7);
        assert_eq!(&b[..4], &[0.25, 0.5, 1.0, 2.0]);
        assert_eq!(b[60], 59.0);
        assert_eq!(&b[61..63], &[60.0, 65.0]);
        assert_eq!(b[72], 115.0);
        assert_eq!(&b[73..], &[120.0, 150.0, 180.0, 210.0, 240.0, 270.0, 300.0]);
        assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
    }
}
