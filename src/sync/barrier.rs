//! `conc_barrier`: a reusable barrier for a fixed number of threads, in
//! one process or several.
//!
//! # Layout (16 bytes, alignment 8)
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 0 | `count` (u32)  | the group size set by `conc_barrier_init`; 0: never initialised |
//! | 4 | `round` (u32)  | futex word: the number of the last completed round |
//! | 8 | `state` (u64)  | `round << 32 \| arrived`: the current round and how many arrived in it |
//!
//! Fixed-width fields, no pointers: the bytes would mean the same to a
//! 32-bit process (32-bit x86 and ARM have 64-bit CAS), though conc itself
//! builds for 64-bit Linux only (see `mutex`).
//!
//! # Design
//!
//! Arrival is one CAS on `state`, which holds the round number and the
//! arrival count together, so every arriving thread learns atomically
//! which round it joined. The arrival that completes the group is the
//! round's only leader: its CAS moves `state` to the next round with no
//! arrivals, all in one step, so a fast thread that re-enters `wait` at
//! once joins the next round and can never slip through the current one.
//! The leader then publishes the new round number in `round` and wakes
//! everyone sleeping on it. A waiter of round `r` sleeps until `round`
//! moves past `r` (compared with wrap-around), re-checking every 20 ms.
//!
//! A barrier is not robust against a member killed before arriving: the
//! others wait for the missing arrival, as with any barrier.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::futex::{self, Deadline, Scope};
use super::mutex::{check_ptr, SLICE_MS};
use crate::error::{conc_status, Error, Result, CONC_ERR_INVALID_ARGUMENT, CONC_ERR_INVALID_STATE};
use crate::ffi::{guard, opt_out_ref};

/// A reusable barrier for threads and processes: 16 bytes, 8-byte aligned.
/// Set its group size with `conc_barrier_init` (all-zero bytes are a
/// barrier that was never initialised: `wait` refuses it); no destroy.
///
/// Works between the threads of a process and between processes sharing
/// the memory; do not move or copy it while in use. The fields are
/// internal. Fixed-width fields only; the layout is fixed for major
/// version 0.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct conc_barrier {
    /// Internal: the group size (0: not initialised).
    pub count: AtomicU32,
    /// Internal: the last completed round.
    pub round: AtomicU32,
    /// Internal: current round and arrivals.
    pub state: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<conc_barrier>() == 16);
const _: () = assert!(std::mem::align_of::<conc_barrier>() == 8);

impl conc_barrier {
    /// A never-initialised barrier (all zero).
    pub const fn new() -> conc_barrier {
        conc_barrier {
            count: AtomicU32::new(0),
            round: AtomicU32::new(0),
            state: AtomicU64::new(0),
        }
    }

    fn addr(&self) -> *const () {
        self as *const conc_barrier as *const ()
    }

    /// Sets the group size (nobody may be waiting).
    pub(crate) fn init(&self, count: u32) -> Result<()> {
        if count == 0 {
            return Err(Error::new(
                CONC_ERR_INVALID_ARGUMENT,
                "conc_barrier_init: count is 0 (at least 1 is needed)",
            ));
        }
        let r = self.round.load(Ordering::Relaxed);
        self.state.store((r as u64) << 32, Ordering::Relaxed);
        self.count.store(count, Ordering::Release);
        Ok(())
    }

    /// Arrives and waits for the group; `Ok(true)` in exactly one thread
    /// of each round.
    pub(crate) fn wait(&self) -> Result<bool> {
        let n = self.count.load(Ordering::Acquire);
        if n == 0 {
            return Err(Error::new(
                CONC_ERR_INVALID_STATE,
                "conc_barrier_wait: the barrier was never initialised (conc_barrier_init)",
            ));
        }
        crate::tsan::release(self.addr());
        let mut s = self.state.load(Ordering::Acquire);
        let (my_round, leader) = loop {
            let round = (s >> 32) as u32;
            let arrived = s as u32;
            let (new, leader) = if arrived.saturating_add(1) >= n {
                ((round.wrapping_add(1) as u64) << 32, true)
            } else {
                (s + 1, false)
            };
            match self
                .state
                .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break (round, leader),
                Err(now) => s = now,
            }
        };
        if leader {
            self.round
                .store(my_round.wrapping_add(1), Ordering::Release);
            futex::wake_all(&self.round, Scope::Shared);
        } else {
            loop {
                let seen = self.round.load(Ordering::Acquire);
                if seen.wrapping_sub(my_round) as i32 > 0 {
                    break;
                }
                futex::wait(
                    &self.round,
                    seen,
                    Deadline::NEVER.slice(SLICE_MS),
                    Scope::Shared,
                );
            }
        }
        crate::tsan::acquire(self.addr());
        Ok(leader)
    }
}

impl Default for conc_barrier {
    fn default() -> Self {
        conc_barrier::new()
    }
}

/// Sets the group size of `barrier` to `count` (at least 1). Call it
/// before use, and again only while no thread waits on it.
///
/// `CONC_ERR_INVALID_ARGUMENT`: `count` is 0, or `barrier` is NULL or not
/// 8-byte aligned.
///
/// # Safety
/// `barrier` must be NULL or point to a `conc_barrier` that stays mapped
/// for the call.
#[no_mangle]
pub unsafe extern "C" fn conc_barrier_init(barrier: *mut conc_barrier, count: u32) -> conc_status {
    const OP: &str = "conc_barrier_init";
    guard(OP, || {
        check_ptr(barrier, OP, "barrier")?;
        // SAFETY: non-NULL and aligned, a conc_barrier per the contract.
        unsafe { &*barrier }.init(count)
    })
}

/// Waits until `count` callers (from `conc_barrier_init`) have arrived,
/// then releases them all; the barrier is at once ready for the next
/// round (a thread that calls it again joins the next group). Exactly one
/// caller of each round gets `*is_leader = true`, the others false;
/// `is_leader` may be NULL, and is written only on success.
///
/// `CONC_ERR_INVALID_STATE`: the barrier was never initialised (all zero).
/// NULL or misaligned `barrier`: `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `barrier` as for `conc_barrier_init`; `is_leader` NULL or valid for
/// writes.
#[no_mangle]
pub unsafe extern "C" fn conc_barrier_wait(
    barrier: *mut conc_barrier,
    is_leader: *mut bool,
) -> conc_status {
    const OP: &str = "conc_barrier_wait";
    guard(OP, || {
        check_ptr(barrier, OP, "barrier")?;
        // SAFETY: non-NULL and aligned, a conc_barrier per the contract.
        let leader = unsafe { &*barrier }.wait()?;
        // SAFETY: NULL or valid for writes per the contract.
        if let Some(out) = unsafe { opt_out_ref(is_leader) } {
            *out = leader;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn uninitialised_and_zero_count_are_refused() {
        let b = conc_barrier::new();
        assert_eq!(b.wait().unwrap_err().status, CONC_ERR_INVALID_STATE);
        assert_eq!(b.init(0).unwrap_err().status, CONC_ERR_INVALID_ARGUMENT);
        b.init(1).unwrap();
        assert!(b.wait().unwrap());
        assert!(b.wait().unwrap());
    }

    #[test]
    fn one_leader_per_round_and_no_slipping() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 2000;
        let b = Arc::new(conc_barrier::new());
        b.init(THREADS as u32).unwrap();
        let leaders = Arc::new(AtomicUsize::new(0));
        let phase = Arc::new(AtomicUsize::new(0));
        let ts: Vec<_> = (0..THREADS)
            .map(|_| {
                let (b, leaders, phase) =
                    (Arc::clone(&b), Arc::clone(&leaders), Arc::clone(&phase));
                std::thread::spawn(move || {
                    for r in 0..ROUNDS {
                        phase.fetch_add(1, Ordering::SeqCst);
                        if b.wait().unwrap() {
                            leaders.fetch_add(1, Ordering::SeqCst);
                        }
                        // Everyone of round r has arrived before anyone leaves.
                        assert!(phase.load(Ordering::SeqCst) >= (r + 1) * THREADS);
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(leaders.load(Ordering::SeqCst), ROUNDS);
    }
}
