//! The manifest-directory source: Kubernetes YAML files in a directory (Service,
//! EndpointSlice, Pod, Node), each file one origin in the store, followed with inotify so an
//! edit, a new file or a deleted file reaches the store within moments.
//!
//! A file that stops being YAML part-way (a half-written save, a typo) keeps the objects of its
//! last complete reading: the error is reported with the file and line, and nothing is taken
//! away from the datapath because of it. A file read to its end replaces its objects as a
//! whole; a new file that breaks part-way delivers the documents before the error.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::store::{Change, ClusterStore, Object};
use super::{Source, SourceError, SyncReport};
use crate::k8s::manifests;

/// How long the directory must stay quiet before a batch of changes is read: an editor's
/// save or a `cp` of several files becomes one reload.
const SETTLE: Duration = Duration::from_millis(100);
/// The longest a steady stream of changes delays a reload.
const MAX_SETTLE: Duration = Duration::from_secs(2);

/// A directory of Kubernetes YAML.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    inotify: Inotify,
}

impl ManifestDir {
    /// Watches `dir` (it must exist).
    pub fn new(dir: &Path) -> Result<Self, SourceError> {
        let watch_failed = |e: nix::Error| SourceError::Watch {
            path: dir.to_owned(),
            detail: e.to_string(),
        };
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(watch_failed)?;
        inotify
            .add_watch(
                dir,
                AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_CREATE,
            )
            .map_err(watch_failed)?;
        Ok(ManifestDir {
            dir: dir.to_owned(),
            inotify,
        })
    }

    fn wait_readable(&self, timeout: Duration) -> Result<bool, SourceError> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => Ok(n > 0),
            Err(nix::Error::EINTR) => Ok(false),
            Err(e) => Err(SourceError::Watch {
                path: self.dir.clone(),
                detail: format!("waiting for changes: {e}"),
            }),
        }
    }

    fn drain(&self) {
        while matches!(self.inotify.read_events(), Ok(events) if !events.is_empty()) {}
    }
}

impl Source for ManifestDir {
    fn sync(&mut self, store: &mut ClusterStore) -> Result<SyncReport, SourceError> {
        let files = manifests::manifest_files(&self.dir).map_err(SourceError::Manifests)?;
        let mut report = SyncReport::default();
        let present: BTreeSet<String> = files.iter().map(|f| origin(f)).collect();
        let gone: Vec<String> = store
            .origins()
            .filter(|o| !present.contains(*o))
            .map(str::to_owned)
            .collect();
        for origin in gone {
            report.changed |= store.apply(Change::Forget { origin });
        }
        for file in &files {
            let mut loaded = manifests::load_file(file);
            if vanished(&loaded) {
                // Removed between the listing and the read: a deletion, not an error (its own
                // inotify event follows and finds nothing more to do).
                report.changed |= store.apply(Change::Forget {
                    origin: origin(file),
                });
                continue;
            }
            let incomplete = !loaded.incomplete.is_empty();
            report.errors.append(&mut loaded.errors);
            report.skipped_kinds.append(&mut loaded.skipped_kinds);
            if incomplete && store.origins().any(|o| o == origin(file)) {
                report.kept.push(file.clone());
                continue;
            }
            report.changed |= store.apply(Change::Replace {
                origin: origin(file),
                objects: Object::all(loaded.objects),
            });
        }
        Ok(report)
    }

    fn wait_for_change(&mut self, timeout: Duration) -> Result<bool, SourceError> {
        if !self.wait_readable(timeout)? {
            return Ok(false);
        }
        let deadline = Instant::now() + MAX_SETTLE;
        loop {
            self.drain();
            if Instant::now() >= deadline || !self.wait_readable(SETTLE)? {
                return Ok(true);
            }
        }
    }

    fn describe(&self) -> String {
        format!("manifest directory {}", self.dir.display())
    }
}

fn origin(file: &Path) -> String {
    file.display().to_string()
}

/// Whether reading the file failed only because it no longer exists.
fn vanished(loaded: &manifests::Manifests) -> bool {
    matches!(
        loaded.errors.as_slice(),
        [manifests::ManifestError::Read { source, .. }]
            if source.kind() == std::io::ErrorKind::NotFound
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}\n";

    fn services(store: &ClusterStore) -> usize {
        store.objects().services.len()
    }

    #[test]
    fn a_file_that_stops_parsing_keeps_its_objects_and_a_deleted_one_loses_them() {
        let dir = tempdir();
        std::fs::write(dir.join("a.yaml"), SERVICE).unwrap();
        let mut source = ManifestDir::new(&dir).unwrap();
        let mut store = ClusterStore::default();
        let report = source.sync(&mut store).unwrap();
        assert!(report.changed && report.errors.is_empty());
        assert_eq!(services(&store), 1);

        std::fs::write(dir.join("a.yaml"), "this: is: not: yaml: [\n").unwrap();
        let report = source.sync(&mut store).unwrap();
        assert!(!report.changed);
        assert_eq!(report.kept, [dir.join("a.yaml")]);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert_eq!(services(&store), 1, "the last good objects stay");

        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        assert!(source.sync(&mut store).unwrap().changed);
        assert_eq!(services(&store), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_broken_after_its_first_document_keeps_both_of_its_last_reading() {
        let dir = tempdir();
        let second = SERVICE
            .replace("name: web", "name: api")
            .replace("10.0.0.1", "10.0.0.2");
        std::fs::write(dir.join("a.yaml"), format!("{SERVICE}---\n{second}")).unwrap();
        let mut source = ManifestDir::new(&dir).unwrap();
        let mut store = ClusterStore::default();
        source.sync(&mut store).unwrap();
        assert_eq!(services(&store), 2);
        std::fs::write(dir.join("a.yaml"), format!("{SERVICE}---\n{{oops")).unwrap();
        let report = source.sync(&mut store).unwrap();
        assert_eq!(report.kept, [dir.join("a.yaml")]);
        assert_eq!(services(&store), 2, "the last complete reading");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_file_that_does_not_parse_delivers_nothing_and_says_why() {
        let dir = tempdir();
        std::fs::write(dir.join("b.yaml"), "kind: [\n").unwrap();
        let mut source = ManifestDir::new(&dir).unwrap();
        let mut store = ClusterStore::default();
        let report = source.sync(&mut store).unwrap();
        assert!(report.kept.is_empty());
        assert_eq!(report.errors.len(), 1);
        assert!(report.errors[0].to_string().contains("b.yaml"));
        assert_eq!(services(&store), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "lb-manifest-dir-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
