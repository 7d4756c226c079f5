//! `cargo xtask apiserver`: the end-to-end tests' API server and kubectl, fetched and built
//! into a cache outside the clone.
//!
//! Debian has no kube-apiserver binary, but its development suite packages Kubernetes' server
//! library as Go source, with the Go toolchain, `openapi-gen` and a `kubectl` binary. Those
//! packages are fetched with a private apt configuration (`vm::apt`, the VM runner's: nothing
//! is installed and the host's apt sources are not touched) and unpacked with `dpkg-deb -x`
//! into `<cache>/tree/<id>/`; `openapi-gen` and `go build` (GOPATH mode over Debian's
//! `/usr/share/gocode`) turn `tests/apiserver/` into `<cache>/build/<key>/bin/`. The key
//! hashes the Go source and the package versions (see `e2e::build`), so a second run finds
//! the build at once and a changed source rebuilds with the packages already unpacked.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use e2e::build::{self, Built};
use vm::apt::{self, AptRepo};

use crate::deps;

/// The suite whose packages build the server: the one that packages k8s.io/apiserver.
const SUITE: &str = "sid";

/// What the build needs: the server library and what it is built with. Their Go-source
/// dependencies come along; of the closure only the Go packages are unpacked.
const ROOTS: &[&str] = &[
    "golang-k8s-apiserver-dev",
    "golang-k8s-api-dev",
    "golang-k8s-client-go-dev",
    "golang-etcd-server-dev",
    "kube-openapi",
    "golang-go",
];

/// Debian's kubectl, a binary package of its own.
const KUBECTL: &str = "kubectl";

/// Host tools the fetch needs.
const HOST_PACKAGES: &[(&str, &str)] = &[
    (
        "debian-archive-keyring",
        "Debian's archive keys, which the fetched packages are checked against",
    ),
    ("dpkg", "dpkg-deb unpacks the fetched packages"),
    (
        "apt",
        "apt-get fetches the packages under a private configuration",
    ),
];

/// The packages the API server is generated from with `openapi-gen`: every type its
/// OpenAPI document describes (kubectl's discovery and server-side apply read it).
const OPENAPI_PACKAGES: &[&str] = &[
    "k8s.io/api/core/v1",
    "k8s.io/api/discovery/v1",
    "k8s.io/apimachinery/pkg/apis/meta/v1",
    "k8s.io/apimachinery/pkg/runtime",
    "k8s.io/apimachinery/pkg/version",
    "k8s.io/apimachinery/pkg/api/resource",
    "k8s.io/apimachinery/pkg/util/intstr",
];

/// The Go import path of the server's source inside the build's GOPATH.
const IMPORT_PATH: &str = "lbtest/apiserver";

/// Options of `cargo xtask apiserver`.
#[derive(Debug, Args)]
pub struct Options {
    /// Fetch the packages again (the suite's newest versions) instead of reusing the
    /// unpacked ones.
    #[arg(long)]
    pub refresh: bool,
}

/// Runs `cargo xtask apiserver`: prints where the server and kubectl are.
pub fn run(options: Options) -> Result<()> {
    let built = ensure(options.refresh)?;
    println!("server:  {}", built.server.display());
    println!("kubectl: {}", built.kubectl.display());
    Ok(())
}

/// The build for the current source, fetching and building what is missing.
pub fn ensure(refresh: bool) -> Result<Built> {
    let started = Instant::now();
    let root = build::cache_root()?;
    let tree = match current_tree(&root) {
        Some(tree) if !refresh => tree,
        _ => fetch(&root)?,
    };
    let built = Built::at(&root, &build::build_key(&tree.id)?);
    if built.is_ready() {
        eprintln!(
            "==> apiserver: cached build {} ({:.1} s)",
            built.dir.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(built);
    }
    compile(&root, &tree, &built)?;
    remove_others(&root.join("build"), &built.dir)?;
    eprintln!(
        "==> apiserver: built in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        built.dir.display()
    );
    Ok(built)
}

/// An unpacked package set.
#[derive(Debug)]
struct Tree {
    id: String,
    dir: PathBuf,
}

fn current_tree(root: &Path) -> Option<Tree> {
    let id = std::fs::read_to_string(build::current_tree_file(root)).ok()?;
    let id = id.trim().to_owned();
    let dir = root.join("tree").join(&id);
    dir.join("ready").is_file().then_some(Tree { id, dir })
}

/// Fetches the packages' current versions and unpacks them (unless that set is unpacked
/// already), then makes it the current tree.
fn fetch(root: &Path) -> Result<Tree> {
    deps::ensure_packages(HOST_PACKAGES)?;
    let started = Instant::now();
    let repo = AptRepo::create(&root.join("apt").join(SUITE), SUITE, &apt::host_mirror()?)?;
    repo.update()?;
    let mut names: Vec<String> = repo
        .closure(ROOTS)?
        .into_iter()
        .filter(|p| p.starts_with("golang-") || ROOTS.contains(&p.as_str()))
        .collect();
    names.push(KUBECTL.to_owned());
    let packages = repo.versions(&names)?;
    let listing: String = packages.iter().map(|(p, v)| format!("{p} {v}\n")).collect();
    let id = build::hash_hex(&[listing.as_bytes()]);
    let dir = root.join("tree").join(&id);
    if !dir.join("ready").is_file() {
        eprintln!(
            "==> apiserver: fetching {} packages from {SUITE} (about 350 MB)",
            packages.len()
        );
        let debs_dir = root.join("debs");
        if debs_dir.exists() {
            std::fs::remove_dir_all(&debs_dir)?;
        }
        let debs = repo.download_all(&packages, &debs_dir)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let unpacked = dir.join("root");
        std::fs::create_dir_all(&unpacked)?;
        for (i, deb) in debs.iter().enumerate() {
            if i % 50 == 0 {
                eprintln!("==> apiserver: unpacking {}/{}", i + 1, debs.len());
            }
            let status = Command::new("dpkg-deb")
                .arg("-x")
                .arg(deb)
                .arg(&unpacked)
                .status()
                .context("cannot run dpkg-deb")?;
            if !status.success() {
                bail!("dpkg-deb -x {} failed: {status}", deb.display());
            }
        }
        std::fs::remove_dir_all(&debs_dir)?;
        std::fs::write(dir.join("packages"), &listing)?;
        std::fs::write(dir.join("ready"), "")?;
        eprintln!(
            "==> apiserver: fetched and unpacked in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    std::fs::write(build::current_tree_file(root), &id)?;
    remove_others(&root.join("tree"), &dir)?;
    Ok(Tree { id, dir })
}

/// Removes every entry of `parent` but `keep`: builds and package sets that are no longer
/// current (they are hundreds of megabytes).
fn remove_others(parent: &Path, keep: &Path) -> Result<()> {
    for entry in std::fs::read_dir(parent)? {
        let path = entry?.path();
        if path != keep {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing the stale {}", path.display()))?;
        }
    }
    Ok(())
}

/// The Go toolchain's root in the unpacked tree (`usr/lib/go-1.NN`, the newest).
fn goroot(unpacked: &Path) -> Result<PathBuf> {
    let lib = unpacked.join("usr/lib");
    let mut roots: Vec<PathBuf> = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("go-"))
                && p.join("bin/go").is_file()
        })
        .collect();
    roots.sort();
    roots
        .pop()
        .with_context(|| format!("no Go toolchain (go-1.*/bin/go) in {}", lib.display()))
}

/// Generates the OpenAPI definitions and builds the server into `built`.
fn compile(root: &Path, tree: &Tree, built: &Built) -> Result<()> {
    let unpacked = tree.dir.join("root");
    let goroot = goroot(&unpacked)?;
    if built.dir.exists() {
        std::fs::remove_dir_all(&built.dir)?;
    }
    let gopath = built.dir.join("gopath");
    let src = gopath.join("src").join(IMPORT_PATH);
    std::fs::create_dir_all(src.join("openapi"))?;
    for file in build::source_files()? {
        std::fs::copy(&file, src.join(file.file_name().unwrap_or_default()))
            .with_context(|| format!("copying {}", file.display()))?;
    }
    let go_env = |cmd: &mut Command| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![goroot.join("bin")];
        paths.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(paths).expect("PATH joins"))
            .env("GOROOT", &goroot)
            .env(
                "GOPATH",
                std::env::join_paths([gopath.clone(), unpacked.join("usr/share/gocode")])
                    .expect("GOPATH joins"),
            )
            // Debian's Go source is laid out for GOPATH mode, as Debian builds it.
            .env("GO111MODULE", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "")
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", root.join("gocache"))
            .current_dir(&src);
    };

    eprintln!("==> apiserver: openapi-gen");
    let started = Instant::now();
    let header = built.dir.join("header.txt");
    std::fs::write(&header, "")?;
    let mut gen = Command::new(unpacked.join("usr/bin/openapi-gen"));
    go_env(&mut gen);
    gen.args(["--output-dir", "openapi", "--output-pkg"])
        .arg(format!("{IMPORT_PATH}/openapi"))
        .args([
            "--output-file",
            "zz_generated.openapi.go",
            "--go-header-file",
        ])
        .arg(&header)
        // The API rule report (missing list-type tags and the like) is Kubernetes' own
        // concern; it is not printed.
        .args(["--report-filename", "/dev/null"])
        .args(OPENAPI_PACKAGES);
    run_tool(&mut gen, "openapi-gen")?;
    eprintln!(
        "==> apiserver: openapi-gen ok in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    eprintln!(
        "==> apiserver: go build (a few minutes the first time; progress in packages compiled)"
    );
    let started = Instant::now();
    let mut list = Command::new(goroot.join("bin/go"));
    go_env(&mut list);
    let total = list
        .args(["list", "-deps", "."])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).lines().count());
    let mut go = Command::new(goroot.join("bin/go"));
    go_env(&mut go);
    go.args(["build", "-v", "-trimpath", "-ldflags"])
        .arg(version_ldflags(&tree.dir)?)
        .arg("-o")
        .arg(&built.server)
        .arg(".");
    go_build_with_progress(&mut go, total)?;
    eprintln!(
        "==> apiserver: go build ok in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let kubectl = unpacked.join("usr/bin/kubectl");
    std::fs::copy(&kubectl, &built.kubectl)
        .with_context(|| format!("copying {}", kubectl.display()))?;
    // The GOPATH copy served the build; the binaries are what stays.
    std::fs::remove_dir_all(&gopath)?;
    std::fs::write(built.ready_marker(), "")?;
    Ok(())
}

/// The `-X` flags that give the server the Kubernetes version its library is (k8s.io/apiserver
/// 0.36.4 is Kubernetes 1.36.4), which `kubectl version` parses and discovery reports.
fn version_ldflags(tree: &Path) -> Result<String> {
    let listing = std::fs::read_to_string(tree.join("packages"))?;
    let version = listing
        .lines()
        .find_map(|l| l.strip_prefix("golang-k8s-apiserver-dev "))
        .context("golang-k8s-apiserver-dev is not in the package set")?;
    kube_version(version).with_context(|| {
        format!("golang-k8s-apiserver-dev {version} is not a 0.MINOR.PATCH Debian version")
    })
}

/// `0.36.4-2` (Debian's version of k8s.io/apiserver) to the linker flags for v1.36.4.
fn kube_version(debian: &str) -> Option<String> {
    let upstream = debian.split(['-', '+', '~']).next()?;
    let mut parts = upstream.split('.');
    let (zero, minor, patch) = (parts.next()?, parts.next()?, parts.next()?);
    if zero != "0" || minor.parse::<u32>().is_err() || patch.parse::<u32>().is_err() {
        return None;
    }
    let pkg = "k8s.io/component-base/version";
    Some(format!(
        "-X {pkg}.gitVersion=v1.{minor}.{patch} -X {pkg}.gitMajor=1 -X {pkg}.gitMinor={minor}"
    ))
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(())
}

/// `go build -v` with its package lines counted into a progress line every 50 packages (out
/// of `total`, the program's packages, when known; packages in Go's cache are not compiled
/// again); everything else it prints (errors) is shown as is.
fn go_build_with_progress(cmd: &mut Command, total: Option<usize>) -> Result<()> {
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run go build")?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut compiled = 0usize;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading go build's output")?;
        let is_package = !line.contains(' ') && !line.starts_with('#');
        if is_package {
            compiled += 1;
            if compiled % 50 == 0 {
                match total {
                    Some(total) => eprintln!("    {compiled}/{total} packages compiled"),
                    None => eprintln!("    {compiled} packages compiled"),
                }
            }
        } else {
            eprintln!("{line}");
        }
    }
    let status = child.wait().context("waiting for go build")?;
    if !status.success() {
        bail!("go build failed ({status}) after {compiled} packages");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_version_maps_to_kubernetes() {
        assert_eq!(
            kube_version("0.36.4-2").as_deref(),
            Some(
                "-X k8s.io/component-base/version.gitVersion=v1.36.4 \
                 -X k8s.io/component-base/version.gitMajor=1 \
                 -X k8s.io/component-base/version.gitMinor=36"
            )
        );
        assert_eq!(kube_version("1.2.3-1"), None);
    }
}
