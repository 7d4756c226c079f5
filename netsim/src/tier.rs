//! A privileged test tier for libtest-mimic runners: when this machine cannot run it (not root,
//! no cgroup v2), it says so in a loud line, and its tests are reported as ignored, or, under
//! `CI=true`, fail, since CI must run every tier. A skipped tier is never a pass.

use libtest_mimic::{Failed, Trial};

/// A tier and whether it can run here.
#[derive(Debug, Clone)]
pub struct Tier {
    unavailable: Option<String>,
    ci: bool,
}

impl Tier {
    /// The tier `name` as this machine can run it ([`crate::why_unavailable`]); prints the
    /// loud line when it cannot.
    pub fn detect(name: &str) -> Tier {
        let tier = Tier {
            unavailable: crate::why_unavailable(),
            ci: std::env::var("CI").is_ok_and(|v| v == "true"),
        };
        if let Some(why) = &tier.unavailable {
            eprintln!("\n*** {name} NOT RUN: {why} ***");
            if tier.ci {
                eprintln!("*** CI=true: {name} must run, so its tests fail ***\n");
            } else {
                eprintln!("*** its tests are reported as ignored; run as root to run them ***\n");
            }
        }
        tier
    }

    /// Whether the tier can run here.
    pub fn available(&self) -> bool {
        self.unavailable.is_none()
    }

    /// A test of this tier: run, ignored, or (under `CI=true`) failing with the reason.
    pub fn trial<F>(&self, name: impl Into<String>, test: F) -> Trial
    where
        F: FnOnce() -> Result<(), Failed> + Send + 'static,
    {
        let name = name.into();
        match (&self.unavailable, self.ci) {
            (None, _) => Trial::test(name, test),
            (Some(why), true) => {
                let message = format!("{name} cannot run under CI=true: {why}");
                Trial::test(name, move || Err(message.into()))
            }
            (Some(_), false) => Trial::test(name, test).with_ignored_flag(true),
        }
    }
}
