//! Synchronization: the futex wait/wake helper shared by every blocking
//! wait in conc, and the robust primitives that C programs place in their
//! own memory: mutex, condition variable, semaphore, barrier and event.
//!
//! # Design
//!
//! Each primitive is a small `#[repr(C)]` struct of fixed-width words
//! (at most 64 bytes, alignment at most 8) declared with its real fields
//! in `conc.h`, so C allocates it wherever it likes; all-zero bytes are
//! its initial state, and the same bytes work between threads and between
//! processes (every futex operation uses the shared scope). Blocking waits
//! go through [`futex`] in bounded slices and re-check their condition, so
//! a waker or woken waiter killed at the wrong instant (SIGKILL) never
//! leaves another waiter asleep for ever.
//!
//! - [`mutex`]: robust and error-checking; held mutexes are linked into
//!   the thread's kernel robust list (glibc's own), so the kernel marks a
//!   mutex whose holder died and wakes a waiter.
//! - [`cond`]: a signal sequence word; waiters re-acquire the mutex
//!   whatever happens and report a dead holder.
//! - [`sem`]: a count word with a sleeper hint.
//! - [`barrier`]: round and arrivals in one 64-bit word, so the arrival
//!   that completes a round starts the next one in the same CAS.
//! - [`event`]: a set counter and a flag in one word, so every waiter
//!   present at a `set` returns even if `clear` follows at once.
//!
//! Every edge they create (unlock → lock, signal → wake, post → wait,
//! set → wait, the barrier's round) is announced to ThreadSanitizer
//! through [`crate::tsan`].

pub mod barrier;
pub mod cond;
pub mod event;
pub mod futex;
pub mod mutex;
pub mod sem;
