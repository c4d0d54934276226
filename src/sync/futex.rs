//! The one futex wait/wake helper that every blocking wait in conc goes
//! through: the synchronization primitives, the pool's idle workers and
//! task joins, and the queues between processes.
//!
//! # Design
//!
//! A waiter sleeps in the kernel on a 32-bit word while the word still
//! holds the value it last saw; a waker changes the word, then wakes. The
//! kernel compares and sleeps atomically, so a wake between the waiter's
//! check and its sleep is never lost: the sleep fails at once with EAGAIN.
//!
//! - **Deadlines are absolute, on `CLOCK_MONOTONIC`** ([`Deadline`]):
//!   `FUTEX_WAIT_BITSET` takes an absolute monotonic time, so a loop of
//!   waits (spurious wakeups, signals) never stretches a timeout, and
//!   changing the wall clock never moves it.
//! - **Scope.** Words in memory that other processes may map are waited on
//!   with the shared futex operations ([`Scope::Shared`]), which the kernel
//!   keys by the page's identity; words private to this process (the
//!   pool's) use the cheaper private operations.
//! - **Bounded slices.** [`wait`] sleeps at most until the deadline;
//!   callers that must survive a waker killed between changing the word and
//!   waking (see HAZARDS: a lost wakeup after SIGKILL) pass a deadline no
//!   later than [`Deadline::slice`] and re-check their condition after
//!   each slice.
//!   [`wait_slice`] is that bounded sleep: for a wait without deadline it
//!   passes the slice as a relative timeout, so a sleep costs no clock
//!   read in user space (the kernel arms the same timer either way).
//!   The timer is the price of that robustness: measured on a 2-CPU
//!   virtual machine with both processes of a round trip on one CPU, a
//!   timed sleep cost some 0.5 µs more than an untimed one (a semaphore
//!   round trip 5.9 µs instead of 5.3 µs; glibc's `sem_t`, untimed, 5.1
//!   µs). Its length does not change its cost, and no untimed sleep is
//!   safe: a poster killed between its count update and its wake, or a
//!   woken waiter killed before it takes its unit, leaves an untimed
//!   sleeper asleep for ever (the kernel's robust-list repair only wakes
//!   on a word whose owner died). So every sleep stays timed, and the
//!   primitives save instead the sleeps themselves (below).
//! - **Spinning** is the caller's choice; [`spin_until`] spins a short,
//!   bounded number of rounds with the CPU's pause hint, never longer.
//!   [`spin_adaptive`] is the spin before a sleep that waits for another
//!   thread or process to act (a post, a signal): a spin only pays when
//!   that partner runs on another CPU at the same time, and costs a whole
//!   CPU slice for nothing when the partner must first be scheduled (it
//!   sleeps, or waits for the spinner's own CPU on a busy machine). So
//!   each object keeps a hint word: a spin that succeeds sets it to
//!   [`SPIN_MAX`] rounds (a few microseconds), a spin that fails halves
//!   it, and at 0 the waiter does not spin at all, except one wait in
//!   [`SPIN_EXPLORE`] of each thread, which spins [`SPIN_MAX`] rounds to
//!   find out whether spinning pays again. A process that has a single
//!   CPU never spins. The spin is thus bounded by [`SPIN_MAX`] pause
//!   rounds per wait, and a waiter whose partner is slow spends on average
//!   less than `SPIN_MAX / SPIN_EXPLORE` rounds per wait.

use std::sync::atomic::{AtomicU32, Ordering};

/// Whether the futex word may be shared with other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The word may live in memory mapped by several processes.
    Shared,
    /// The word is private to this process (cheaper).
    Private,
}

impl Scope {
    fn flag(self) -> i32 {
        match self {
            Scope::Shared => 0,
            Scope::Private => libc::FUTEX_PRIVATE_FLAG,
        }
    }
}

/// Why [`wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Woken, or the word no longer held `expected`, or a spurious wakeup:
    /// re-check the condition.
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// A point on the monotonic clock, or never.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Option<libc::timespec>,
}

/// The monotonic clock, now.
pub fn now() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: CLOCK_MONOTONIC always exists; ts is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts
}

fn add_ns(ts: libc::timespec, ns: u64) -> libc::timespec {
    let total = ts.tv_nsec as u64 + ns % 1_000_000_000;
    let secs = (ns / 1_000_000_000).saturating_add(total / 1_000_000_000);
    libc::timespec {
        tv_sec: ts.tv_sec.saturating_add(secs.min(i64::MAX as u64) as i64),
        tv_nsec: (total % 1_000_000_000) as i64,
    }
}

fn before(a: &libc::timespec, b: &libc::timespec) -> bool {
    (a.tv_sec, a.tv_nsec) < (b.tv_sec, b.tv_nsec)
}

impl Deadline {
    /// No deadline: wait for ever.
    pub const NEVER: Deadline = Deadline { at: None };

    /// `timeout_ms` milliseconds from now. `u64::MAX` is treated as never.
    pub fn after_ms(timeout_ms: u64) -> Deadline {
        if timeout_ms == u64::MAX {
            return Deadline::NEVER;
        }
        Deadline {
            at: Some(add_ns(now(), timeout_ms.saturating_mul(1_000_000))),
        }
    }

    /// From an optional timeout: `None` waits for ever.
    pub fn from_timeout(timeout_ms: Option<u64>) -> Deadline {
        timeout_ms.map_or(Deadline::NEVER, Deadline::after_ms)
    }

    /// Whether the deadline has passed (never, for [`Deadline::NEVER`]).
    pub fn expired(&self) -> bool {
        match &self.at {
            None => false,
            Some(at) => !before(&now(), at),
        }
    }

    /// Whether this deadline is [`Deadline::NEVER`].
    pub fn is_never(&self) -> bool {
        self.at.is_none()
    }

    /// The earlier of this deadline and `slice_ms` from now: the bound on
    /// one sleep for waits that re-check their condition in slices.
    pub fn slice(&self, slice_ms: u64) -> Deadline {
        let s = add_ns(now(), slice_ms.saturating_mul(1_000_000));
        match self.at {
            Some(at) if before(&at, &s) => *self,
            _ => Deadline { at: Some(s) },
        }
    }

    /// Milliseconds left, rounded up; `None` for never.
    pub fn remaining_ms(&self) -> Option<u64> {
        let at = self.at?;
        let n = now();
        if !before(&n, &at) {
            return Some(0);
        }
        let ns = (at.tv_sec - n.tv_sec) as i128 * 1_000_000_000 + (at.tv_nsec - n.tv_nsec) as i128;
        Some(((ns + 999_999) / 1_000_000) as u64)
    }
}

/// Sleeps while `*word == expected`, until woken or `deadline` passes.
/// Returns [`Wake::Woken`] for every reason but the deadline (a wake, the
/// word changed, a signal, a spurious wakeup): the caller re-checks.
pub fn wait(word: &AtomicU32, expected: u32, deadline: Deadline, scope: Scope) -> Wake {
    if deadline.expired() {
        return Wake::TimedOut;
    }
    let ts = deadline
        .at
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the call; FUTEX_WAIT_BITSET
    // reads it, compares it with `expected` and sleeps until a wake or the
    // absolute CLOCK_MONOTONIC time `ts` (NULL: none). It writes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET | scope.flag(),
            expected,
            ts,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    if r == -1 && crate::error::errno() == libc::ETIMEDOUT {
        Wake::TimedOut
    } else {
        Wake::Woken
    }
}

/// One bounded sleep of a wait that re-checks its condition: sleeps while
/// `*word == expected`, at most `slice_ms` and at most until `deadline`.
/// [`Wake::TimedOut`] means the slice or the deadline passed: the caller
/// re-checks its condition and its deadline either way.
pub fn wait_slice(
    word: &AtomicU32,
    expected: u32,
    deadline: Deadline,
    slice_ms: u64,
    scope: Scope,
) -> Wake {
    if !deadline.is_never() {
        return wait(word, expected, deadline.slice(slice_ms), scope);
    }
    let rel = libc::timespec {
        tv_sec: (slice_ms / 1000) as libc::time_t,
        tv_nsec: ((slice_ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the call; FUTEX_WAIT
    // reads it, compares it with `expected` and sleeps until a wake or
    // the relative CLOCK_MONOTONIC timeout `rel`. It writes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | scope.flag(),
            expected,
            &rel as *const libc::timespec,
        )
    };
    if r == -1 && crate::error::errno() == libc::ETIMEDOUT {
        Wake::TimedOut
    } else {
        Wake::Woken
    }
}

/// Wakes at most `count` waiters sleeping on `word`; returns how many woke.
pub fn wake(word: &AtomicU32, count: u32, scope: Scope) -> usize {
    let count = count.min(i32::MAX as u32) as i32;
    // SAFETY: FUTEX_WAKE only uses the word's address as a key.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | scope.flag(),
            count,
        )
    };
    r.max(0) as usize
}

/// Wakes every waiter sleeping on `word`.
pub fn wake_all(word: &AtomicU32, scope: Scope) -> usize {
    wake(word, i32::MAX as u32, scope)
}

/// Spins at most `rounds` times (with the CPU's pause hint) until `done`
/// returns true; returns whether it did. The short, bounded spin before a
/// futex sleep.
#[inline]
pub fn spin_until(rounds: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..rounds {
        if done() {
            return true;
        }
        std::hint::spin_loop();
    }
    done()
}

/// The most pause rounds of one [`spin_adaptive`] (about 2 to 5 µs on
/// current x86 CPUs, whose pause takes some 15 to 40 ns).
pub(crate) const SPIN_MAX: u32 = 128;

/// One wait in this many, per thread, spins [`SPIN_MAX`] rounds although
/// the object's hint says spinning did not pay lately.
pub(crate) const SPIN_EXPLORE: u32 = 64;

thread_local! {
    static SPIN_TICK: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// 0: not known yet, 1: this process may run on a single CPU, 2: on more.
static MULTI_CPU: AtomicU32 = AtomicU32::new(0);

fn multi_cpu() -> bool {
    match MULTI_CPU.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: a zeroed cpu_set_t is a valid out buffer of the size
            // passed; pid 0 is the calling thread.
            let n = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
                {
                    libc::CPU_COUNT(&set)
                } else {
                    2
                }
            };
            MULTI_CPU.store(if n > 1 { 2 } else { 1 }, Ordering::Relaxed);
            n > 1
        }
        v => v == 2,
    }
}

/// The spin before a sleep that waits for a partner (see the module
/// comment): spins at most [`SPIN_MAX`] rounds, as many as `hint` (the
/// object's hint word, any value) says, until `done` returns true; returns
/// whether it did, and updates the hint (success: [`SPIN_MAX`]; failure:
/// half). `done` is always called at least once.
#[inline]
pub fn spin_adaptive(hint: &AtomicU32, mut done: impl FnMut() -> bool) -> bool {
    if done() {
        return true;
    }
    let h = hint.load(Ordering::Relaxed).min(SPIN_MAX);
    let rounds = if h != 0 {
        h
    } else {
        let t = SPIN_TICK.with(|c| {
            let t = c.get().wrapping_add(1);
            c.set(t);
            t
        });
        if t.is_multiple_of(SPIN_EXPLORE) {
            SPIN_MAX
        } else {
            0
        }
    };
    if rounds == 0 || !multi_cpu() {
        return false;
    }
    if spin_until(rounds, &mut done) {
        if h != SPIN_MAX {
            hint.store(SPIN_MAX, Ordering::Relaxed);
        }
        return true;
    }
    if h != 0 {
        hint.store(h / 2, Ordering::Relaxed);
    }
    false
}

/// Loads `word` with acquire ordering (a convenience for wait loops).
#[inline]
pub fn load(word: &AtomicU32) -> u32 {
    word.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn timeout_is_honoured() {
        let w = AtomicU32::new(0);
        let start = Instant::now();
        let mut r = Wake::Woken;
        let d = Deadline::after_ms(50);
        while r == Wake::Woken {
            r = wait(&w, 0, d, Scope::Shared);
        }
        assert_eq!(r, Wake::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn changed_word_returns_at_once() {
        let w = AtomicU32::new(1);
        assert_eq!(wait(&w, 0, Deadline::NEVER, Scope::Private), Wake::Woken);
    }

    #[test]
    fn wake_releases_a_sleeper() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = Arc::clone(&w);
        let t = std::thread::spawn(move || {
            while w2.load(Ordering::Acquire) == 0 {
                wait(&w2, 0, Deadline::after_ms(10_000), Scope::Shared);
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        w.store(1, Ordering::Release);
        wake_all(&w, Scope::Shared);
        t.join().unwrap();
    }

    #[test]
    fn zero_timeout_is_expired_and_slices_are_bounded() {
        assert!(Deadline::after_ms(0).expired());
        assert!(!Deadline::NEVER.expired());
        assert_eq!(Deadline::NEVER.remaining_ms(), None);
        let s = Deadline::NEVER.slice(5);
        assert!(s.remaining_ms().unwrap() <= 5);
        let d = Deadline::after_ms(1);
        let s = d.slice(1000);
        assert_eq!(
            s.at.map(|t| (t.tv_sec, t.tv_nsec)),
            d.at.map(|t| (t.tv_sec, t.tv_nsec))
        );
        assert!(!Deadline::after_ms(u64::MAX - 1).expired());
    }
}
