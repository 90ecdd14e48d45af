//! The process's heap, kept close to what the agent holds. glibc gives every thread that
//! allocates its own arena (up to eight per core) and keeps freed memory in them for reuse; a
//! sync's temporaries (JSON pages, a snapshot being rebuilt) would stay resident in those
//! arenas long after the sync. So the arenas are limited at start and freed pages are handed
//! back after a sync. Other C libraries: no-ops.

/// Limits glibc to two malloc arenas (the main one and one shared by every other thread):
/// measured on the `memory_footprint` benchmark, the agent's tokio workers, blocking threads
/// and SQLite otherwise hold several MB each in their own arenas. Call once, first thing.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; M_ARENA_MAX takes any positive count.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns memory freed after a large load (a snapshot rebuilt, a sync's temporaries) to the
/// OS, so the resident size reflects what the agent keeps rather than the peak of loading.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
