//! Where `cargo xtask apiserver` keeps the test API server and kubectl, and how a build is
//! keyed: by the hash of the Go source in `tests/apiserver/` and the set of Debian packages
//! (with versions) it was built from. Shared by xtask (which builds) and the tests (which
//! find the build).

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The environment variable that overrides the cache directory.
pub const CACHE_ENV: &str = "LB_APISERVER_CACHE";

/// The command that builds the server and fetches kubectl.
pub const BUILD_COMMAND: &str = "cargo xtask apiserver";

/// The server binary's name.
pub const SERVER_BIN: &str = "lb-test-apiserver";

/// The cache directory, outside the clone: `$LB_APISERVER_CACHE`, else
/// `$XDG_CACHE_HOME/lb-apiserver`, else `~/.cache/lb-apiserver`.
pub fn cache_root() -> Result<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(CACHE_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("lb-apiserver"));
    }
    let home = var("HOME").context("neither $LB_APISERVER_CACHE nor $HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/lb-apiserver"))
}

/// The Go source directory (`tests/apiserver`).
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("apiserver")
}

/// The Go source files that go into the build, sorted.
pub fn source_files() -> Result<Vec<PathBuf>> {
    let dir = source_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "go") || p.file_name().is_some_and(|n| n == "go.mod")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A 128-bit hash of `parts` as lowercase hex.
pub fn hash_hex(parts: &[&[u8]]) -> String {
    let mut h = siphasher::sip128::SipHasher13::new();
    for part in parts {
        h.write_usize(part.len());
        h.write(part);
    }
    format!(
        "{:032x}",
        siphasher::sip128::Hasher128::finish128(&h).as_u128()
    )
}

/// The build key: the Go source (names and contents) and the package tree's id.
pub fn build_key(tree_id: &str) -> Result<String> {
    let mut parts: Vec<Vec<u8>> = vec![tree_id.as_bytes().to_vec()];
    for file in source_files()? {
        parts.push(
            file.file_name()
                .unwrap_or_default()
                .as_encoded_bytes()
                .to_vec(),
        );
        parts.push(std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?);
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Ok(hash_hex(&refs))
}

/// The file naming the package tree in use (`tree/<id>`).
pub fn current_tree_file(root: &Path) -> PathBuf {
    root.join("tree-current")
}

/// A finished build.
#[derive(Clone, Debug)]
pub struct Built {
    /// The build directory (`<cache>/build/<key>`).
    pub dir: PathBuf,
    /// The API server.
    pub server: PathBuf,
    /// Debian's kubectl.
    pub kubectl: PathBuf,
}

impl Built {
    /// The build of `key` under `root`, whether or not it is finished.
    pub fn at(root: &Path, key: &str) -> Built {
        let dir = root.join("build").join(key);
        Built {
            server: dir.join("bin").join(SERVER_BIN),
            kubectl: dir.join("bin").join("kubectl"),
            dir,
        }
    }

    /// The marker written last, when both binaries are in place.
    pub fn ready_marker(&self) -> PathBuf {
        self.dir.join("ready")
    }

    /// Whether the build finished.
    pub fn is_ready(&self) -> bool {
        self.ready_marker().is_file() && self.server.is_file() && self.kubectl.is_file()
    }

    /// The build for the current Go source, failing with the command that makes it when it
    /// is missing or was built from other source.
    pub fn find() -> Result<Built> {
        let root = cache_root()?;
        let tree = std::fs::read_to_string(current_tree_file(&root)).unwrap_or_default();
        if tree.trim().is_empty() {
            bail!(
                "the test API server is not built (no {}): run `{BUILD_COMMAND}` first",
                current_tree_file(&root).display()
            );
        }
        let built = Built::at(&root, &build_key(tree.trim())?);
        if !built.is_ready() {
            bail!(
                "the test API server is not built for the current source in {} (no {}): run \
                 `{BUILD_COMMAND}` first",
                source_dir().display(),
                built.ready_marker().display()
            );
        }
        Ok(built)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_with_the_tree() {
        assert_ne!(build_key("a").unwrap(), build_key("b").unwrap());
        assert_eq!(build_key("a").unwrap(), build_key("a").unwrap());
    }

    #[test]
    fn hashing_separates_parts() {
        assert_ne!(hash_hex(&[b"ab", b"c"]), hash_hex(&[b"a", b"bc"]));
    }
}
