//! Threads (being written).

/// Holds the thread registry's lock until the returned guard is dropped.
/// `conc_process_spawn` holds it across `fork`, so that the child never
/// inherits it locked by a thread that does not exist there.
#[allow(dead_code)] // used by process.rs once it lands
pub(crate) fn lock_registry_for_fork() -> impl Sized {}
