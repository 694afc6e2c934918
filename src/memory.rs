//! Heap settings for glibc's allocator. By default it keeps up to eight
//! arenas per core and returns little to the kernel, so a replica that once
//! listed 100,000 objects kept several times its live heap as RSS: the list's
//! pages and queued changes were freed into arenas that stayed mapped.
//! Measured with `loadtest initial-sync` (docs/performance.md).

use std::time::Duration;

/// Arenas glibc may create: enough for the async runtime's two hot threads
/// without one arena per blocking thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MAX_ARENAS: libc::c_int = 2;

/// How often freed heap pages go back to the kernel.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(20);

/// Caps glibc's arenas; call before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MAX_ARENAS);
    }
}

/// Hands free heap pages back to the kernel, so RSS follows the live heap
/// down after a large list or backlog instead of staying at its peak.
pub fn return_freed_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks and frees nothing in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs `return_freed_pages` every TRIM_INTERVAL until the task is dropped.
pub async fn trim_periodically() {
    let mut ticks = tokio::time::interval(TRIM_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // It walks the heap; keep it off the async threads.
        let _ = tokio::task::spawn_blocking(return_freed_pages).await;
    }
}
