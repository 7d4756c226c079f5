//! The VM runner: the scenario suite's `kernel` backend run inside a VM on a matrix of
//! kernels.
//!
//! - [`catalog`]: which kernels `--kernel` names (Debian suites, the host's, a path).
//! - [`apt`] and [`cache`]: kernels fetched from Debian's archive with apt's own tools and
//!   Debian's archive keys, under a private apt configuration, and kept in a cache so a second
//!   run needs no network.
//! - [`modules`]: the kernel modules the scenarios need, decompressed, with their dependencies
//!   in load order.
//! - [`initramfs`] and [`cpio`]: the guest's root file system, packed on the host: busybox, a
//!   small init, the scenario binaries at their host paths with their shared libraries, the
//!   scenario files and the modules.
//! - [`launch`]: qemu, with KVM when a probe shows it can run a guest and TCG otherwise; a
//!   guest that hangs is killed at a deadline and reported with the tail of its console.
//! - [`virtme`]: virtme-ng as the other launcher (the host's root over 9p), installed from PyPI
//!   into a venv under the cache, for kernels that have 9p.
//! - [`results`]: the per-scenario JSON report the guest prints between markers.
//! - [`matrix`]: `ci/kernels.toml`, the kernels and their expected-unsupported scenarios;
//! - [`report`]: the per-kernel and kernel × scenario tables as text, Markdown and HTML.

pub mod apt;
pub mod cache;
pub mod catalog;
pub mod cpio;
pub mod initramfs;
pub mod launch;
pub mod matrix;
pub mod modules;
pub mod report;
pub mod results;
pub mod virtme;
