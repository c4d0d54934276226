//! `conc_sem`: a counting semaphore between threads and processes, at 0
//! from all-zero bytes.
//!
//! # Layout (16 bytes, alignment 4)
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 0 | `count` (u32)   | futex word: the count, at most `CONC_SEM_VALUE_MAX` |
//! | 4 | `waiters` (u32) | how many threads may be sleeping (lets `post` skip the wake call) |
//! | 8 | `reserved` (2 × u32) | zero |
//!
//! Only 32-bit words and no pointers: a 32-bit process could share the
//! same bytes.
//!
//! # Design
//!
//! `wait` takes one with a CAS on `count` when it is above 0; otherwise it
//! registers in `waiters` and sleeps while `count` is 0. `post` adds one
//! with a CAS (refusing to pass `CONC_SEM_VALUE_MAX`) and wakes one sleeper
//! if `waiters` says there may be one. Both sides use sequentially
//! consistent operations (waiter: increment `waiters`, then read `count`;
//! poster: increment `count`, then read `waiters`), so a post is never
//! lost: the poster wakes, or the waiter sees the count.
//!
//! Robustness: sleeps are bounded slices (20 ms) after which the waiter
//! re-reads the count, so a woken waiter SIGKILLed before it took its unit
//! never leaves the unit stranded with others asleep. A killed waiter
//! leaves `waiters` one too high: a spare wake call per post, never a hang.
//! (A waiter killed after taking a unit has taken it: a semaphore has no
//! owner to give it back.)

use std::sync::atomic::{AtomicU32, Ordering};

use super::futex::{self, Deadline, Scope};
use super::mutex::{check_ptr, SLICE_MS};
use crate::error::{
    conc_status, Error, Result, CONC_ERR_BUSY, CONC_ERR_OUT_OF_RANGE, CONC_ERR_TIMED_OUT,
};
use crate::ffi::{guard, guard_value};

/// The largest count of a `conc_sem` (2^31 − 1).
pub const CONC_SEM_VALUE_MAX: u32 = 0x7fff_ffff;

/// Spin rounds before sleeping on a semaphore at 0.
const SPIN_ROUNDS: u32 = 32;

/// A counting semaphore for threads and processes: 16 bytes, 4-byte
/// aligned, **all-zero bytes are a semaphore at 0** (`= {0}`,
/// `CONC_SEM_INIT`, a zero-filled segment); `conc_sem_init` sets another
/// count; no destroy.
///
/// Works between the threads of a process and between processes sharing
/// the memory; do not move or copy it while in use. The fields are
/// internal: `count` is the count, `waiters` counts possible sleepers.
/// Fixed-width fields only; the layout is fixed for major version 0.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct conc_sem {
    /// Internal: the count.
    pub count: AtomicU32,
    /// Internal: possible sleepers.
    pub waiters: AtomicU32,
    /// Internal: zero.
    pub reserved: [u32; 2],
}

const _: () = assert!(std::mem::size_of::<conc_sem>() == 16);
const _: () = assert!(std::mem::align_of::<conc_sem>() == 4);

impl conc_sem {
    /// A semaphore at 0 (all zero).
    pub const fn new() -> conc_sem {
        conc_sem {
            count: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            reserved: [0; 2],
        }
    }

    fn addr(&self) -> *const () {
        self as *const conc_sem as *const ()
    }

    /// Sets the count (no thread may be using the semaphore).
    pub(crate) fn init(&self, value: u32) -> Result<()> {
        if value > CONC_SEM_VALUE_MAX {
            return Err(Error::new(
                CONC_ERR_OUT_OF_RANGE,
                format_args!("conc_sem_init: value {value} is above CONC_SEM_VALUE_MAX ({CONC_SEM_VALUE_MAX})"),
            ));
        }
        self.waiters.store(0, Ordering::Relaxed);
        self.count.store(value, Ordering::SeqCst);
        Ok(())
    }

    #[inline]
    fn try_take(&self, order: Ordering) -> bool {
        let mut c = self.count.load(order);
        while c != 0 {
            match self
                .count
                .compare_exchange_weak(c, c - 1, Ordering::Acquire, order)
            {
                Ok(_) => return true,
                Err(now) => c = now,
            }
        }
        false
    }

    /// Takes one, waiting until `deadline`; `None` only tries (BUSY at 0).
    pub(crate) fn wait(&self, deadline: Option<Deadline>) -> Result<()> {
        let op = match deadline {
            None => "conc_sem_trywait",
            Some(d) if d.is_never() => "conc_sem_wait",
            Some(_) => "conc_sem_wait_timeout",
        };
        if self.try_take(Ordering::Relaxed) {
            crate::tsan::acquire(self.addr());
            return Ok(());
        }
        let Some(deadline) = deadline else {
            return Err(Error::new(
                CONC_ERR_BUSY,
                format_args!("{op}: the semaphore is at 0"),
            ));
        };
        if futex::spin_until(SPIN_ROUNDS, || self.try_take(Ordering::Relaxed)) {
            crate::tsan::acquire(self.addr());
            return Ok(());
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let r = loop {
            if self.try_take(Ordering::SeqCst) {
                break Ok(());
            }
            if deadline.expired() {
                break Err(Error::new(
                    CONC_ERR_TIMED_OUT,
                    format_args!("{op}: the semaphore stayed at 0"),
                ));
            }
            futex::wait(&self.count, 0, deadline.slice(SLICE_MS), Scope::Shared);
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        if r.is_ok() {
            crate::tsan::acquire(self.addr());
        }
        r
    }

    /// Adds one and wakes a waiter; `OUT_OF_RANGE` at the maximum.
    pub(crate) fn post(&self) -> Result<()> {
        crate::tsan::release(self.addr());
        let mut c = self.count.load(Ordering::Relaxed);
        loop {
            if c >= CONC_SEM_VALUE_MAX {
                return Err(Error::new(
                    CONC_ERR_OUT_OF_RANGE,
                    format_args!(
                        "conc_sem_post: the count is at CONC_SEM_VALUE_MAX ({CONC_SEM_VALUE_MAX})"
                    ),
                ));
            }
            match self
                .count
                .compare_exchange_weak(c, c + 1, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => c = now,
            }
        }
        if self.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake(&self.count, 1, Scope::Shared);
        }
        Ok(())
    }

    /// The current count.
    pub(crate) fn value(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Default for conc_sem {
    fn default() -> Self {
        conc_sem::new()
    }
}

fn with_sem(
    op: &'static str,
    sem: *mut conc_sem,
    f: impl FnOnce(&conc_sem) -> Result<()>,
) -> conc_status {
    guard(op, || {
        check_ptr(sem, op, "sem")?;
        // SAFETY: non-NULL and aligned; a conc_sem per the caller's
        // contract (atomics and unused words only).
        f(unsafe { &*sem })
    })
}

/// Sets the count of `sem` to `value`. Call it only while no thread uses
/// the semaphore (all-zero bytes are already a semaphore at 0).
///
/// `CONC_ERR_OUT_OF_RANGE`: `value` is above `CONC_SEM_VALUE_MAX` (nothing
/// changes). NULL or misaligned: `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `sem` must be NULL or point to a `conc_sem` that stays mapped for the
/// call.
#[no_mangle]
pub unsafe extern "C" fn conc_sem_init(sem: *mut conc_sem, value: u32) -> conc_status {
    with_sem("conc_sem_init", sem, |s| s.init(value))
}

/// Waits until the count of `sem` is above 0 and takes one.
///
/// NULL or misaligned: `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// As `conc_sem_init`.
#[no_mangle]
pub unsafe extern "C" fn conc_sem_wait(sem: *mut conc_sem) -> conc_status {
    with_sem("conc_sem_wait", sem, |s| s.wait(Some(Deadline::NEVER)))
}

/// Takes one if the count of `sem` is above 0, without waiting.
///
/// `CONC_ERR_BUSY`: the count is 0 (nothing changes). NULL or misaligned:
/// `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// As `conc_sem_init`.
#[no_mangle]
pub unsafe extern "C" fn conc_sem_trywait(sem: *mut conc_sem) -> conc_status {
    with_sem("conc_sem_trywait", sem, |s| s.wait(None))
}

/// Like `conc_sem_wait`, waiting at most `timeout_ms` milliseconds
/// (monotonic clock; 0 tries once): then `CONC_ERR_TIMED_OUT`, nothing
/// taken.
///
/// # Safety
/// As `conc_sem_init`.
#[no_mangle]
pub unsafe extern "C" fn conc_sem_wait_timeout(sem: *mut conc_sem, timeout_ms: u64) -> conc_status {
    with_sem("conc_sem_wait_timeout", sem, |s| {
        s.wait(Some(Deadline::after_ms(timeout_ms)))
    })
}

/// Adds one to the count of `sem` and wakes one waiter (in any process).
///
/// `CONC_ERR_OUT_OF_RANGE`: the count is already `CONC_SEM_VALUE_MAX`; it
/// stays. NULL or misaligned: `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// As `conc_sem_init`.
#[no_mangle]
pub unsafe extern "C" fn conc_sem_post(sem: *mut conc_sem) -> conc_status {
    with_sem("conc_sem_post", sem, |s| s.post())
}

/// The current count of `sem` (it may change at once); 0 for NULL or a
/// misaligned pointer.
///
/// # Safety
/// As `conc_sem_init`.
#[no_mangle]
pub unsafe extern "C" fn conc_sem_value(sem: *const conc_sem) -> u32 {
    guard_value("conc_sem_value", 0, || {
        if check_ptr(sem, "conc_sem_value", "sem").is_err() {
            return 0;
        }
        // SAFETY: non-NULL and aligned, a conc_sem per the contract.
        unsafe { &*sem }.value()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_and_limits() {
        let s = conc_sem::new();
        assert_eq!(s.wait(None).unwrap_err().status, CONC_ERR_BUSY);
        s.post().unwrap();
        s.post().unwrap();
        assert_eq!(s.value(), 2);
        s.wait(None).unwrap();
        s.wait(Some(Deadline::NEVER)).unwrap();
        let t = std::time::Instant::now();
        let e = s.wait(Some(Deadline::after_ms(25))).unwrap_err();
        assert_eq!(e.status, CONC_ERR_TIMED_OUT);
        assert!(t.elapsed() >= std::time::Duration::from_millis(25));
        assert_eq!(
            s.init(CONC_SEM_VALUE_MAX + 1).unwrap_err().status,
            CONC_ERR_OUT_OF_RANGE
        );
        s.init(CONC_SEM_VALUE_MAX).unwrap();
        assert_eq!(s.post().unwrap_err().status, CONC_ERR_OUT_OF_RANGE);
        assert_eq!(s.value(), CONC_SEM_VALUE_MAX);
    }

    #[test]
    fn post_wakes_sleepers() {
        let s = Arc::new(conc_sem::new());
        let ts: Vec<_> = (0..3)
            .map(|_| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || s.wait(Some(Deadline::NEVER)).unwrap())
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        for _ in 0..3 {
            s.post().unwrap();
        }
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(s.value(), 0);
    }
}
