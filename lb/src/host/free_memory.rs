//! Giving the allocator's free memory back to the kernel between the start's phases.
//!
//! The start goes through phases that each allocate a lot and free most of it: the lists'
//! pages (decoded on the watch thread, in that thread's malloc arena), loading the eBPF
//! programs (the kernel's BTF, parsed), the first translation. glibc keeps what they freed
//! for later allocations *of the same arena*, so the next phase, on another thread, takes
//! new pages instead and the process's peak RSS is the sum of the phases rather than the
//! largest of them. `malloc_trim(0)` hands every whole free page back.

/// Returns the allocator's free pages to the kernel; a no-op where the C library has no
/// `malloc_trim` (not glibc).
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Keeps large allocations in their own mappings, which go back to the kernel when freed.
/// glibc raises its mmap threshold each time such a block is freed (up to 32 MiB), after which
/// the lists' page buffers and the first pass's big vectors land among the small objects that
/// stay, and their pages cannot be given back.
pub fn keep_large_blocks_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; called before any thread starts.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}
