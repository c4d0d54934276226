//! `conc_event`: a flag that threads and processes can wait for, like
//! Python's `multiprocessing.Event`; clear from all-zero bytes.
//!
//! # Layout (16 bytes, alignment 4)
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 0 | `state` (u32)   | futex word: `sets << 1 \| is_set` |
//! | 4 | `waiters` (u32) | how many threads may be sleeping (lets `set` skip the wake call) |
//! | 8 | `reserved` (2 × u32) | zero |
//!
//! Only 32-bit words, no pointers: a 32-bit process could share the same
//! bytes.
//!
//! # Design
//!
//! Bit 0 of `state` is the flag; the upper 31 bits count the sets that
//! changed it from clear to set. A waiter that finds the flag clear sleeps
//! while `state` still holds the value it read. Only a set can change that
//! value (`clear` only turns bit 0 off, which is already off for a
//! sleeper), so any change the waiter sees means a set happened after it
//! began waiting: it returns `CONC_OK` even if a `clear` followed at once,
//! which the contract requires. The set counter wraps after 2^31 sets; a
//! waiter would miss a set only if exactly 2^31 of them happened during
//! one of its sleeps.
//!
//! `waiters` follows the same sequentially consistent handshake as the
//! semaphore's; sleeps are 20 ms slices with a re-check, so a killed
//! waiter or setter never strands another waiter.

use std::sync::atomic::{AtomicU32, Ordering};

use super::futex::{self, Deadline, Scope};
use super::mutex::{check_ptr, SLICE_MS};
use crate::error::{conc_status, Error, Result, CONC_ERR_TIMED_OUT};
use crate::ffi::{guard, guard_value};

/// An event flag for threads and processes: 16 bytes, 4-byte aligned,
/// **all-zero bytes are a cleared event** (`= {0}`, `CONC_EVENT_INIT`, a
/// zero-filled segment); no init, no destroy.
///
/// Works between the threads of a process and between processes sharing
/// the memory; do not move or copy it while in use. The fields are
/// internal. Fixed-width fields only; the layout is fixed for major
/// version 0.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct conc_event {
    /// Internal: set counter and flag.
    pub state: AtomicU32,
    /// Internal: possible sleepers.
    pub waiters: AtomicU32,
    /// Internal: zero.
    pub reserved: [u32; 2],
}

const _: () = assert!(std::mem::size_of::<conc_event>() == 16);
const _: () = assert!(std::mem::align_of::<conc_event>() == 4);

impl conc_event {
    /// A cleared event (all zero).
    pub const fn new() -> conc_event {
        conc_event {
            state: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            reserved: [0; 2],
        }
    }

    fn addr(&self) -> *const () {
        self as *const conc_event as *const ()
    }

    /// Sets the flag and wakes every waiter.
    pub(crate) fn set(&self) {
        crate::tsan::release(self.addr());
        let mut v = self.state.load(Ordering::Relaxed);
        loop {
            if v & 1 != 0 {
                // Already set: nobody sleeps on a set flag. The SeqCst
                // fence pairs with the waiters' handshake.
                std::sync::atomic::fence(Ordering::SeqCst);
                return;
            }
            let new = (v & !1).wrapping_add(2) | 1;
            match self
                .state
                .compare_exchange_weak(v, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake_all(&self.state, Scope::Shared);
        }
    }

    /// Clears the flag.
    pub(crate) fn clear(&self) {
        self.state.fetch_and(!1, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub(crate) fn is_set(&self) -> bool {
        self.state.load(Ordering::Acquire) & 1 != 0
    }

    /// Waits until the flag is set (or a set happens) or `deadline`.
    pub(crate) fn wait(&self, deadline: Deadline) -> Result<()> {
        let op = if deadline.is_never() {
            "conc_event_wait"
        } else {
            "conc_event_wait_timeout"
        };
        let seen = self.state.load(Ordering::Acquire);
        if seen & 1 != 0 {
            crate::tsan::acquire(self.addr());
            return Ok(());
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let r = loop {
            if self.state.load(Ordering::SeqCst) != seen {
                break Ok(());
            }
            if deadline.expired() {
                break Err(Error::new(
                    CONC_ERR_TIMED_OUT,
                    format_args!("{op}: the event was not set in time"),
                ));
            }
            futex::wait(&self.state, seen, deadline.slice(SLICE_MS), Scope::Shared);
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        if r.is_ok() {
            crate::tsan::acquire(self.addr());
        }
        r
    }
}

impl Default for conc_event {
    fn default() -> Self {
        conc_event::new()
    }
}

fn with_event(
    op: &'static str,
    event: *mut conc_event,
    f: impl FnOnce(&conc_event) -> Result<()>,
) -> conc_status {
    guard(op, || {
        check_ptr(event, op, "event")?;
        // SAFETY: non-NULL and aligned; a conc_event per the caller's
        // contract (atomics and unused words only).
        f(unsafe { &*event })
    })
}

/// Sets `event` and wakes every thread waiting on it (in any process);
/// later waits return at once until `conc_event_clear`. Every thread
/// waiting when `set` is called returns `CONC_OK`, even if `clear`
/// follows at once. Setting a set event changes nothing. NULL or
/// misaligned: `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `event` must be NULL or point to a `conc_event` that stays mapped for
/// the call.
#[no_mangle]
pub unsafe extern "C" fn conc_event_set(event: *mut conc_event) -> conc_status {
    with_event("conc_event_set", event, |e| {
        e.set();
        Ok(())
    })
}

/// Clears `event`: later waits block until the next `conc_event_set`.
/// NULL or misaligned: `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// As `conc_event_set`.
#[no_mangle]
pub unsafe extern "C" fn conc_event_clear(event: *mut conc_event) -> conc_status {
    with_event("conc_event_clear", event, |e| {
        e.clear();
        Ok(())
    })
}

/// Whether `event` is set (it may change at once); false (0) for NULL or
/// a misaligned pointer.
///
/// # Safety
/// As `conc_event_set`.
#[no_mangle]
pub unsafe extern "C" fn conc_event_is_set(event: *const conc_event) -> bool {
    guard_value("conc_event_is_set", false, || {
        if check_ptr(event, "conc_event_is_set", "event").is_err() {
            return false;
        }
        // SAFETY: non-NULL and aligned, a conc_event per the contract.
        unsafe { &*event }.is_set()
    })
}

/// Waits until `event` is set; returns at once if it is.
/// NULL or misaligned: `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// As `conc_event_set`.
#[no_mangle]
pub unsafe extern "C" fn conc_event_wait(event: *mut conc_event) -> conc_status {
    with_event("conc_event_wait", event, |e| e.wait(Deadline::NEVER))
}

/// Like `conc_event_wait`, waiting at most `timeout_ms` milliseconds
/// (monotonic clock; 0 only checks): then `CONC_ERR_TIMED_OUT`.
///
/// # Safety
/// As `conc_event_set`.
#[no_mangle]
pub unsafe extern "C" fn conc_event_wait_timeout(
    event: *mut conc_event,
    timeout_ms: u64,
) -> conc_status {
    with_event("conc_event_wait_timeout", event, |e| {
        e.wait(Deadline::after_ms(timeout_ms))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn set_clear_and_timeout() {
        let e = conc_event::new();
        assert!(!e.is_set());
        let t = std::time::Instant::now();
        assert_eq!(
            e.wait(Deadline::after_ms(25)).unwrap_err().status,
            CONC_ERR_TIMED_OUT
        );
        assert!(t.elapsed() >= std::time::Duration::from_millis(25));
        e.set();
        e.set();
        assert!(e.is_set());
        e.wait(Deadline::NEVER).unwrap();
        e.clear();
        assert!(!e.is_set());
    }

    #[test]
    fn set_then_clear_releases_every_waiter() {
        let e = Arc::new(conc_event::new());
        let ts: Vec<_> = (0..4)
            .map(|_| {
                let e = Arc::clone(&e);
                std::thread::spawn(move || e.wait(Deadline::after_ms(10_000)))
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(30));
        e.set();
        e.clear();
        for t in ts {
            t.join().unwrap().unwrap();
        }
    }
}
