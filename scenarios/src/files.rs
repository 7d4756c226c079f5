//! A scenario's inputs as the agent reads them: a values file and a manifest directory per
//! node, in a scratch directory removed on drop.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::spec::Scenario;

/// The scratch directory of one scenario run.
#[derive(Debug)]
pub struct ScenarioFiles {
    root: PathBuf,
}

impl ScenarioFiles {
    /// Creates `<tmp>/lb-scenario-<name>-<pid>-<n>` with the values file.
    pub fn create(scenario: &Scenario, backend: &str) -> Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!(
            "lb-scenario-{}-{backend}-{}-{n}",
            scenario.name,
            std::process::id()
        ));
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let files = ScenarioFiles { root };
        let values = serde_yaml::to_string(&scenario.values)?;
        std::fs::write(files.values(), values)?;
        Ok(files)
    }

    /// The values file every agent uses.
    pub fn values(&self) -> PathBuf {
        self.root.join("values.yaml")
    }

    /// The manifest directory of `node`.
    pub fn manifests(&self, node: &str) -> PathBuf {
        self.root.join("manifests").join(node)
    }

    /// A scratch path for `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Writes `objects` as the manifest directory of `node`, replacing what was there in one
    /// rename, so a watching agent never reads half of it.
    pub fn write_objects(&self, node: &str, objects: &[serde_yaml::Value]) -> Result<()> {
        let dir = self.manifests(node);
        std::fs::create_dir_all(&dir)?;
        let text = objects
            .iter()
            .map(serde_yaml::to_string)
            .collect::<Result<Vec<_>, _>>()?
            .join("---\n");
        let tmp = self.root.join(format!(".{node}-objects.yaml.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join("objects.yaml"))?;
        Ok(())
    }
}

impl Drop for ScenarioFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
