//! `conc_cond`: a condition variable used with a `conc_mutex`, between
//! threads and between processes, ready from all-zero bytes.
//!
//! # Layout (16 bytes, alignment 4)
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 0 | `seq` (u32)     | futex word: bumped by every signal and broadcast |
//! | 4 | `waiters` (u32) | how many threads may be waiting (a hint that lets `signal` skip the wake call) |
//! | 8 | `reserved` (2 × u32) | zero |
//!
//! Only 32-bit words and no pointers, so a 32-bit process could share the
//! same bytes (the mutex it is used with cannot, see `mutex`).
//!
//! # Design
//!
//! A waiter registers in `waiters`, reads `seq`, releases the mutex, and
//! sleeps while `seq` still holds the value it read. A signal bumps `seq`
//! before waking, so a signal after the mutex release is never lost: the
//! kernel refuses to sleep on a changed word. `waiters` and `seq` are
//! accessed with sequentially consistent operations on both sides (the
//! waiter increments `waiters` then reads `seq`; the signaller increments
//! `seq` then reads `waiters`), so at least one side sees the other: the
//! signaller wakes, or the waiter does not sleep.
//!
//! Robustness: sleeps are bounded slices (20 ms); after each one a waiter
//! whose `seq` changed returns (a spurious wakeup, which the caller's
//! predicate loop absorbs). So a woken waiter SIGKILLed before it used its
//! wakeup never strands the others, and a killed waiter only leaves
//! `waiters` one too high (a spare wake call per signal, never a hang).
//! A waiter re-acquires the mutex whatever happened and returns
//! `OWNER_DEAD` when its holder died meanwhile. Waiting on a mutex the
//! caller got with `OWNER_DEAD` and has not repaired hands it on still
//! marked "holder died" (the data is still unrepaired), so the next
//! holder, maybe the same waiter, gets `OWNER_DEAD` again.

use std::sync::atomic::{AtomicU32, Ordering};

use super::futex::{self, Deadline, Scope};
use super::mutex::{check_ptr, conc_mutex, owner_dead, SLICE_MS};
use crate::error::{conc_status, Error, Result, CONC_ERR_INVALID_STATE, CONC_ERR_TIMED_OUT};
use crate::ffi::guard;

/// A condition variable for threads and processes: 16 bytes, 4-byte
/// aligned, **all-zero bytes are a ready condition variable** (`= {0}`,
/// `CONC_COND_INIT`, a zero-filled segment); no init, no destroy.
///
/// Use it with a `conc_mutex` that the waiter holds. It works between the
/// threads of a process and between processes sharing the memory; do not
/// move or copy it while in use. The fields are internal: `seq` counts
/// signals, `waiters` counts possible sleepers. Fixed-width fields only;
/// the layout is fixed for major version 0.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct conc_cond {
    /// Internal: bumped by every signal and broadcast.
    pub seq: AtomicU32,
    /// Internal: possible sleepers.
    pub waiters: AtomicU32,
    /// Internal: zero.
    pub reserved: [u32; 2],
}

const _: () = assert!(std::mem::size_of::<conc_cond>() == 16);
const _: () = assert!(std::mem::align_of::<conc_cond>() == 4);

impl conc_cond {
    /// A ready condition variable (all zero).
    pub const fn new() -> conc_cond {
        conc_cond {
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            reserved: [0; 2],
        }
    }

    fn addr(&self) -> *const () {
        self as *const conc_cond as *const ()
    }

    /// Releases `mutex` (held by the caller), waits for a signal or
    /// broadcast until `deadline`, and re-acquires `mutex`.
    /// `Ok(false)`: woken (maybe spuriously); `Ok(true)`: woken or timed
    /// out, and the mutex's holder died meanwhile (held, inconsistent:
    /// OWNER_DEAD). Errors: `INVALID_STATE` (the caller does not hold
    /// `mutex`: nothing happened; or the mutex became unusable while
    /// waiting: not held), `TIMED_OUT` (mutex held).
    #[allow(dead_code)] // the internal API of the queues
    pub(crate) fn wait(&self, mutex: &conc_mutex, deadline: Deadline) -> Result<bool> {
        let op = if deadline.is_never() {
            "conc_cond_wait"
        } else {
            "conc_cond_wait_timeout"
        };
        self.wait_as(op, mutex, deadline)
    }

    fn wait_as(&self, op: &'static str, mutex: &conc_mutex, deadline: Deadline) -> Result<bool> {
        if !mutex.held_by_caller(op)? {
            return Err(Error::new(
                CONC_ERR_INVALID_STATE,
                format_args!("{op}: the calling thread does not hold the mutex"),
            ));
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let seen = self.seq.load(Ordering::SeqCst);
        if let Err(e) = mutex.release(op, true) {
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        let mut timed_out = false;
        loop {
            futex::wait(&self.seq, seen, deadline.slice(SLICE_MS), Scope::Shared);
            if self.seq.load(Ordering::Acquire) != seen {
                break;
            }
            if deadline.expired() {
                timed_out = true;
                break;
            }
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        crate::tsan::acquire(self.addr());
        if mutex.acquire(op, Some(Deadline::NEVER))? {
            return Ok(true);
        }
        if timed_out {
            return Err(Error::new(
                CONC_ERR_TIMED_OUT,
                format_args!("{op}: no signal came in time (the mutex is held again)"),
            ));
        }
        Ok(false)
    }

    /// Wakes at least one waiter, if there is any.
    pub(crate) fn signal(&self) {
        crate::tsan::release(self.addr());
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake(&self.seq, 1, Scope::Shared);
        }
    }

    /// Wakes every waiter.
    pub(crate) fn broadcast(&self) {
        crate::tsan::release(self.addr());
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake_all(&self.seq, Scope::Shared);
        }
    }
}

impl Default for conc_cond {
    fn default() -> Self {
        conc_cond::new()
    }
}

fn wait_c(
    op: &'static str,
    cond: *mut conc_cond,
    mutex: *mut conc_mutex,
    deadline: impl FnOnce() -> Deadline,
) -> conc_status {
    guard(op, || {
        check_ptr(cond, op, "cond")?;
        check_ptr(mutex, op, "mutex")?;
        // SAFETY: non-NULL and aligned; the caller promises they point to
        // a conc_cond and a conc_mutex (atomics and unused words only).
        let (c, m) = unsafe { (&*cond, &*mutex) };
        if c.wait_as(op, m, deadline())? {
            Err(owner_dead(op))
        } else {
            Ok(())
        }
    })
}

/// Releases `mutex` (which the calling thread must hold), waits until
/// `cond` is signalled or broadcast, then locks `mutex` again. Spurious
/// wakeups are possible: wait in a loop on a predicate.
///
/// Returns with the mutex held whatever it returns, except where noted:
/// `CONC_OK`; `CONC_ERR_OWNER_DEAD` when re-acquiring found that a holder
/// of the mutex died meanwhile (held; repair, then
/// `conc_mutex_consistent`). `CONC_ERR_INVALID_STATE`: the calling thread
/// does not hold `mutex` (nothing happens), or the mutex became unusable
/// while waiting (not held). NULL or misaligned `cond` or `mutex`:
/// `CONC_ERR_INVALID_ARGUMENT`. Waiters in different processes wake each
/// other.
///
/// # Safety
/// `cond` and `mutex` must each be NULL or point to their object in
/// memory that stays mapped for the call.
#[no_mangle]
pub unsafe extern "C" fn conc_cond_wait(
    cond: *mut conc_cond,
    mutex: *mut conc_mutex,
) -> conc_status {
    wait_c("conc_cond_wait", cond, mutex, || Deadline::NEVER)
}

/// Like `conc_cond_wait`, waiting at most `timeout_ms` milliseconds
/// (monotonic clock): then `CONC_ERR_TIMED_OUT`, with the mutex held.
/// `CONC_ERR_OWNER_DEAD` takes precedence over the timeout.
///
/// # Safety
/// As `conc_cond_wait`.
#[no_mangle]
pub unsafe extern "C" fn conc_cond_wait_timeout(
    cond: *mut conc_cond,
    mutex: *mut conc_mutex,
    timeout_ms: u64,
) -> conc_status {
    wait_c("conc_cond_wait_timeout", cond, mutex, || {
        Deadline::after_ms(timeout_ms)
    })
}

/// Wakes at least one thread waiting on `cond`, if there is any (in any
/// process). The caller need not hold the mutex. NULL or misaligned:
/// `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `cond` must be NULL or point to a `conc_cond` that stays mapped for the
/// call.
#[no_mangle]
pub unsafe extern "C" fn conc_cond_signal(cond: *mut conc_cond) -> conc_status {
    const OP: &str = "conc_cond_signal";
    guard(OP, || {
        check_ptr(cond, OP, "cond")?;
        // SAFETY: non-NULL and aligned, a conc_cond per the contract.
        unsafe { &*cond }.signal();
        Ok(())
    })
}

/// Wakes every thread waiting on `cond` (in any process). NULL or
/// misaligned: `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// As `conc_cond_signal`.
#[no_mangle]
pub unsafe extern "C" fn conc_cond_broadcast(cond: *mut conc_cond) -> conc_status {
    const OP: &str = "conc_cond_broadcast";
    guard(OP, || {
        check_ptr(cond, OP, "cond")?;
        // SAFETY: non-NULL and aligned, a conc_cond per the contract.
        unsafe { &*cond }.broadcast();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Shared {
        m: conc_mutex,
        c: conc_cond,
        ready: AtomicU32,
    }

    #[test]
    fn wait_needs_the_mutex_and_times_out_holding_it() {
        let m = conc_mutex::new();
        let c = conc_cond::new();
        let e = c.wait(&m, Deadline::after_ms(10)).unwrap_err();
        assert_eq!(e.status, CONC_ERR_INVALID_STATE);
        m.lock(Deadline::NEVER).unwrap();
        let t = std::time::Instant::now();
        let e = c.wait(&m, Deadline::after_ms(30)).unwrap_err();
        assert_eq!(e.status, CONC_ERR_TIMED_OUT);
        assert!(t.elapsed() >= std::time::Duration::from_millis(30));
        m.unlock().unwrap();
    }

    #[test]
    fn signal_and_broadcast_wake_waiters() {
        let s = Arc::new(Shared {
            m: conc_mutex::new(),
            c: conc_cond::new(),
            ready: AtomicU32::new(0),
        });
        let ts: Vec<_> = (0..3)
            .map(|_| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    s.m.lock(Deadline::NEVER).unwrap();
                    while s.ready.load(Ordering::Relaxed) == 0 {
                        s.c.wait(&s.m, Deadline::NEVER).unwrap();
                    }
                    s.m.unlock().unwrap();
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.m.lock(Deadline::NEVER).unwrap();
        s.ready.store(1, Ordering::Relaxed);
        s.c.broadcast();
        s.m.unlock().unwrap();
        for t in ts {
            t.join().unwrap();
        }
        s.c.signal(); // no waiter: harmless
    }
}
