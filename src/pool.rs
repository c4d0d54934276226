//! Thread pools, tasks and parallel loops (issue: "Thread pools, tasks and
//! parallel loops"). Not written yet.

/// Called by conc's `pthread_atfork` prepare handler, before any other
/// conc lock is taken: takes the pool's own locks.
#[allow(dead_code)] // wired in by the atfork handlers
pub(crate) fn fork_prepare() {}

/// Called by conc's `pthread_atfork` parent handler: releases them.
#[allow(dead_code)] // wired in by the atfork handlers
pub(crate) fn fork_parent() {}

/// Called by conc's `pthread_atfork` child handler: the child has no pool
/// threads; forget them, so that the default pool starts fresh threads
/// on first use.
#[allow(dead_code)] // wired in by the atfork handlers
pub(crate) fn fork_child() {}
