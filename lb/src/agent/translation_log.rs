//! [`TranslationLog`]: the translation's errors and warnings logged once each, when they first
//! appear, rather than at every pass. One malformed object among 10 000 services would
//! otherwise be logged again at every change of any other object, and counted again in
//! `lb_errors_total{kind="translation"}` each time.

use std::collections::HashSet;

use tracing::warn;

use crate::k8s::Translation;
use crate::metrics::{ErrorKind, Metrics};

/// What the last pass's translation reported.
#[derive(Debug, Default)]
pub struct TranslationLog {
    errors: HashSet<String>,
    warnings: HashSet<String>,
}

impl TranslationLog {
    /// Logs the errors and warnings of `translation` that the last one did not have (one that
    /// went away and came back is new again), counts the new errors in `metrics`, and
    /// returns how many lines it logged.
    pub fn report(&mut self, translation: &Translation, metrics: &Metrics) -> usize {
        let errors: HashSet<String> = translation.errors.iter().map(|e| e.to_string()).collect();
        let warnings: HashSet<String> = translation.warnings.iter().cloned().collect();
        let mut logged = 0;
        let mut new_errors = 0;
        // In the translation's order, so the log reads as the objects are sorted.
        for e in translation.errors.iter().map(ToString::to_string) {
            if !self.errors.contains(&e) {
                warn!("error: {e}");
                new_errors += 1;
            }
        }
        for w in &translation.warnings {
            if !self.warnings.contains(w) {
                warn!("warning: {w}");
                logged += 1;
            }
        }
        metrics.errors(ErrorKind::Translation, new_errors);
        self.errors = errors;
        self.warnings = warnings;
        logged + new_errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{ObjectRef, TranslateError};

    fn error(name: &str) -> TranslateError {
        TranslateError {
            object: ObjectRef {
                kind: "Service",
                namespace: "default".into(),
                name: name.into(),
            },
            field: "spec.clusterIP".into(),
            value: "\"not-an-ip\"".into(),
            reason: "expected an IPv4 or IPv6 address".into(),
        }
    }

    fn translation(errors: &[&str], warnings: &[&str]) -> Translation {
        Translation {
            errors: errors.iter().map(|n| error(n)).collect(),
            warnings: warnings.iter().map(|w| (*w).to_owned()).collect(),
            ..Translation::default()
        }
    }

    #[test]
    fn each_error_and_warning_is_logged_when_it_appears_and_again_only_after_it_went() {
        let metrics = Metrics::new(std::time::SystemTime::now(), true);
        let mut log = TranslationLog::default();
        assert_eq!(log.report(&translation(&["a"], &["w"]), &metrics), 2);
        assert_eq!(
            log.report(&translation(&["a"], &["w"]), &metrics),
            0,
            "unchanged"
        );
        assert_eq!(
            log.report(&translation(&["a", "b"], &["w"]), &metrics),
            1,
            "b is new"
        );
        assert_eq!(
            log.report(&translation(&["b"], &[]), &metrics),
            0,
            "a and w went"
        );
        assert_eq!(
            log.report(&translation(&["a", "b"], &["w"]), &metrics),
            2,
            "back"
        );
        let text = metrics.encode();
        assert!(
            text.contains("lb_errors_total{kind=\"translation\"} 3"),
            "a, b, a again: {text}"
        );
    }
}
