//! `conc_mutex`: a robust, error-checking mutex that lives in the
//! program's own memory (a global, the heap, a shared segment), works
//! between threads and between processes, and starts unlocked from
//! all-zero bytes.
//!
//! # Layout (40 bytes, alignment 8)
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 0  | `lock` (u32)        | the futex word: holder TID \| `WAITERS` \| `OWNER_DIED` |
//! | 4  | `reserved` (5 × u32) | zero; room for later versions |
//! | 24 | `list_prev` (u64)   | robust-list back link (holder's address space) |
//! | 32 | `list_next` (u64)   | robust-list forward link, read by the kernel |
//!
//! Only fixed-width fields, so the bytes mean the same in every process.
//! A 32-bit process could share the lock word's meaning, but not the
//! robust-list links: 32-bit glibc keeps a singly linked list with another
//! futex offset, so conc builds this module for 64-bit Linux only.
//!
//! # Design: the kernel's robust futex list, shared with glibc
//!
//! The lock word follows the kernel's robust-futex convention
//! (`FUTEX_TID_MASK` = 0x3fffffff holds the holder's TID, bit 31
//! `FUTEX_WAITERS` says sleepers may exist, bit 30 `FUTEX_OWNER_DIED`).
//! Each thread has one robust-list head registered with the kernel
//! (`set_robust_list`); when the thread ends (exit, `pthread_exit`, exec,
//! its process killed, even by SIGKILL) the kernel walks that list, and
//! for each lock word whose TID is the dying thread's it writes
//! `(word & WAITERS) | OWNER_DIED` and wakes one waiter.
//!
//! glibc owns that head (in its thread descriptor) for its robust pthread
//! mutexes, and a thread has only one: calling `set_robust_list` would
//! silently break the program's own robust mutexes. So conc never does
//! while a head exists: it finds glibc's head with `get_robust_list`, and
//! links each held `conc_mutex` into glibc's own list exactly as glibc
//! links a `pthread_mutex_t`. glibc's 64-bit list (nptl/descr.h,
//! `ENQUEUE_MUTEX_BOTH`/`DEQUEUE_MUTEX`) is circular and doubly linked
//! through a `{prev, next}` pair; every link points at the `next` field of
//! an entry (the head's `list` field plays `next`, with `robust_prev` just
//! before it), bit 0 of a link may flag a PI mutex and is masked off, and
//! the head's `futex_offset` is `offsetof(lock) - offsetof(list.next)` =
//! 0 - 32 = -32 for `pthread_mutex_t`. `conc_mutex` puts its lock word at 0
//! and its `{prev, next}` pair at 24/32, so the same offset finds its word,
//! and glibc's own enqueue/dequeue of a neighbour (which writes
//! `next->prev`) keeps our entries intact. conc checks at run time that the
//! head's offset is -32 (otherwise: `CONC_ERR_UNSUPPORTED`). When no head
//! is registered (a libc without robust lists), conc registers its own,
//! per thread, with the same layout.
//!
//! Like glibc, conc sets the head's `list_op_pending` to the mutex around
//! every acquire (including the whole wait) and release, so a death
//! between the lock word and the list is still handled: the kernel also
//! treats the pending entry, and (Linux 5.5 and later) when its word has
//! no owner it wakes a waiter (a waiter killed after being woken, or a
//! releaser killed before its wake); the bounded wait slices below cover
//! those cases on any kernel.
//!
//! The TID and the head are cached per thread. A forked child keeps
//! glibc's head address but has a new TID, so a `pthread_atfork` child
//! handler (registered from `.init_array` when the library loads, so
//! before the program's own handlers) bumps a fork generation, and each
//! thread re-reads its TID (and the head) when the generation it cached is
//! stale. (`_Fork`, `vfork` and raw `clone` skip atfork handlers; their
//! children must not use a mutex.)
//!
//! # States of the lock word (`t` = a TID, `W` = WAITERS, `D` = OWNER_DIED)
//!
//! | word | state |
//! |---|---|
//! | `0` | free |
//! | `t`, `t\|W` | held by thread `t` (W: sleepers may exist) |
//! | `t\|D`, `t\|D\|W` | held by `t`, **inconsistent**: `t` got `OWNER_DEAD` and has not called `consistent` |
//! | `D`, `D\|W` | free, and the last holder died: the next acquirer gets `OWNER_DEAD` |
//! | `0x3fffffff` (+W) | **unusable**: unlocked without `consistent`; no TID is that large (PID_MAX_LIMIT is 2^22) |
//!
//! # Transitions, and why each is safe
//!
//! - **acquire** (`0` or `D[|W]` → `me[|D][|W]`, one CAS): succeeds only on
//!   a word with no TID, so two threads never both hold. From `D` the
//!   acquirer keeps `D` in the word (inconsistent) and reports
//!   `OWNER_DEAD`. A thread that has slept sets `W` on its acquire, because
//!   the release it woke from cleared `W` while others may still sleep
//!   (over-setting `W` costs a spare wake, never a lost one). Before the
//!   CAS, `list_op_pending` names the mutex; after it, the mutex is linked
//!   into the list, then pending is cleared: a death at any point leaves
//!   the word either not ours (nothing to do) or ours and reachable from
//!   the list or pending, so the kernel marks it `D`.
//! - **wait** (`t` → `t|W`, CAS, then `FUTEX_WAIT` on `t|W`): the kernel
//!   sleeps only while the word still equals `t|W`, so a release between
//!   the CAS and the sleep is never missed. Sleeps are bounded slices of
//!   at most 20 ms after which the waiter re-reads the word (HAZARDS: a
//!   woken waiter SIGKILLed before it takes the lock would otherwise strand
//!   the other sleepers): no waiter waits for ever on a free word.
//! - **release** (`me[|W]` → `0`, one swap; wake one if `W` was set): only
//!   the holder (TID check first) releases; it unlinks the mutex (pending
//!   set) before the swap, so the kernel never sees a released entry in the
//!   list. Waiters add only `W`, and only the holder adds or removes `D`,
//!   so the swap cannot lose anything but `W`, which it answers with a wake.
//! - **release while inconsistent** (`me|D[|W]` → `0x3fffffff`, wake all):
//!   the mutex becomes unusable; every acquirer, sleeper included, sees the
//!   value on its next look and returns `INVALID_STATE`. The kernel never
//!   touches it (no thread has that TID).
//! - **consistent** (`me|D[|W]` → `me[|W]`, atomic AND): only the holder.
//! - **holder death** (`t[|D][|W]` → `D[|W]`, done by the kernel): the
//!   kernel writes only a word whose TID is the dying thread's, clears the
//!   TID (so a reused TID never inherits the lock) and wakes one waiter;
//!   that waiter acquires `D` (OWNER_DEAD) and, having slept, sets `W` so
//!   its own release wakes the next.
//! - **forked child's private copy** of a mutex its parent held: the word
//!   holds the parent thread's TID, never the child's, so `trylock` gives
//!   `BUSY` and `unlock` `INVALID_STATE` (the kernel marks only the
//!   parent's own memory when the parent dies, never the child's copy).
//!
//! Error checks read the word once: the holder is whoever's TID is in it,
//! in whichever process (TIDs are unique in a PID namespace; processes in
//! different PID namespaces must not share a mutex).
//!
//! # Cost
//!
//! The uncontended path is one CAS to lock and one swap to unlock, plus a
//! few plain stores into the (cached) list head and the mutex's own cache
//! line: the work of a glibc robust mutex, without its kind dispatch. A
//! contended locker sleeps at once (see `acquire`, measured), except a
//! condition variable's waiter re-taking the mutex, which spins briefly.
//! glibc's default `pthread_mutex_t` skips both atomics in a process that
//! has a single thread; a `conc_mutex` may be shared with another process
//! at any time, so it never can.

use std::cell::Cell;
use std::sync::atomic::{compiler_fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::futex::{self, Deadline, Scope};
use crate::error::{
    conc_status, Error, Result, CONC_ERR_BUSY, CONC_ERR_DEADLOCK, CONC_ERR_INVALID_ARGUMENT,
    CONC_ERR_INVALID_STATE, CONC_ERR_OWNER_DEAD, CONC_ERR_TIMED_OUT, CONC_ERR_UNSUPPORTED,
};
use crate::ffi::guard;

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!("conc_mutex links into the 64-bit Linux robust futex list");

const TID_MASK: u32 = 0x3fff_ffff;
const WAITERS: u32 = 0x8000_0000;
const OWNER_DIED: u32 = 0x4000_0000;
/// The lock word of an unusable mutex (no TID is ever this large).
const UNUSABLE: u32 = TID_MASK;
/// The longest single sleep of a waiter before it re-reads the word.
pub(crate) const SLICE_MS: u64 = 20;
/// Spin rounds before sleeping on a held mutex, when the caller asks for
/// a spin (see [`conc_mutex::acquire_spin`]).
const SPIN_ROUNDS: u32 = 64;
/// `futex_offset` of glibc's 64-bit robust list (and of `conc_mutex`).
const FUTEX_OFFSET: isize = -32;

/// A robust, error-checking mutex for threads and processes: 40 bytes,
/// 8-byte aligned, **all-zero bytes are an unlocked mutex** (`= {0}`,
/// `CONC_MUTEX_INIT`, or a zero-filled `conc_shm` segment), no init and
/// no destroy call.
///
/// Place it anywhere 8-byte aligned (a global, the stack, `malloc`'d
/// memory, any 8-aligned offset of a shared segment or map); it works
/// between the threads of a process and between processes that share the
/// memory. Do not move or copy it while it is in use, and do not unmap or
/// free it while a thread holds it. The fields are internal: `lock` is
/// the futex word (holder's thread id and two flag bits), `list_prev` and
/// `list_next` link a held mutex into its holder thread's robust list so
/// that the kernel marks it when the holder dies. The layout is fixed for
/// major version 0 and uses only fixed-width fields.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct conc_mutex {
    /// Internal: the lock word.
    pub lock: AtomicU32,
    /// Internal: zero.
    pub reserved: [u32; 5],
    /// Internal: robust-list back link.
    pub list_prev: AtomicU64,
    /// Internal: robust-list forward link.
    pub list_next: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<conc_mutex>() == 40);
const _: () = assert!(std::mem::align_of::<conc_mutex>() == 8);
const _: () = assert!(std::mem::offset_of!(conc_mutex, lock) == 0);
const _: () = assert!(std::mem::offset_of!(conc_mutex, list_prev) == 24);
const _: () = assert!(std::mem::offset_of!(conc_mutex, list_next) == 32);

// ---------------------------------------------------------------------------
// The calling thread: TID and robust-list head, cached.

#[derive(Clone, Copy)]
pub(crate) struct Me {
    pub(crate) tid: u32,
    gen: u32,
    /// Address of the head's `list` field; `futex_offset` and
    /// `list_op_pending` follow it.
    head: usize,
}

thread_local! {
    static ME: Cell<Me> = const { Cell::new(Me { tid: 0, gen: 0, head: 0 }) };
    /// A head of our own, for a thread whose libc registered none:
    /// `[robust_prev, list, futex_offset, list_op_pending]`.
    static OWN_HEAD: [AtomicUsize; 4] = const {
        [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)]
    };
}

/// Bumped in every forked child (atfork), so cached TIDs are re-read.
static FORK_GEN: AtomicU32 = AtomicU32::new(1);
static ATFORK: std::sync::Once = std::sync::Once::new();

extern "C" fn after_fork_in_child() {
    let g = FORK_GEN.load(Ordering::Relaxed).wrapping_add(1);
    FORK_GEN.store(if g == 0 { 1 } else { g }, Ordering::Relaxed);
}

/// The cached TID and head, if current (the C fast paths).
#[inline(always)]
fn me_cached() -> Option<Me> {
    let m = ME.with(Cell::get);
    (m.gen == FORK_GEN.load(Ordering::Relaxed)).then_some(m)
}

fn register_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: registers a plain function with no captured state; it
        // runs in the child of fork() and only touches an atomic.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

extern "C" fn register_atfork_at_load() {
    register_atfork();
}

/// Registers the fork handler when the library is loaded, before `main`,
/// so it runs before the child handlers the program registers itself (a
/// handler that locks a `conc_mutex` then already sees the child's TID).
#[used]
#[link_section = ".init_array"]
static REGISTER_ATFORK_AT_LOAD: extern "C" fn() = register_atfork_at_load;

/// The calling thread's TID and robust-list head (cached).
#[inline]
pub(crate) fn me(op: &str) -> Result<Me> {
    let m = ME.with(Cell::get);
    if m.gen == FORK_GEN.load(Ordering::Relaxed) {
        return Ok(m);
    }
    me_slow(op)
}

#[cold]
fn me_slow(op: &str) -> Result<Me> {
    register_atfork();
    let gen = FORK_GEN.load(Ordering::Relaxed);
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    let mut head: usize = 0;
    let mut len: usize = 0;
    // SAFETY: pid 0 is the calling thread; both outputs are valid.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0,
            &mut head as *mut usize,
            &mut len as *mut usize,
        )
    };
    if r != 0 || head == 0 {
        head = OWN_HEAD.with(|h| {
            let list = &h[1] as *const AtomicUsize as usize;
            h[0].store(list, Ordering::Relaxed);
            h[1].store(list, Ordering::Relaxed);
            h[2].store(FUTEX_OFFSET as usize, Ordering::Relaxed);
            h[3].store(0, Ordering::Relaxed);
            list
        });
        // SAFETY: the head lives in this thread's TLS, which outlives
        // the thread's exit processing by the kernel; 24 bytes is the
        // size of `struct robust_list_head`.
        let r = unsafe { libc::syscall(libc::SYS_set_robust_list, head, 24usize) };
        if r != 0 {
            return Err(Error::last_os(format_args!("{op}: set_robust_list")));
        }
    } else {
        // SAFETY: the kernel returned the registered head of this thread,
        // a live `struct robust_list_head` (list, futex_offset, pending).
        let off = unsafe { head_word(head, 1) }.load(Ordering::Relaxed) as isize;
        if off != FUTEX_OFFSET {
            return Err(Error::new(
                CONC_ERR_UNSUPPORTED,
                format_args!("{op}: this thread's robust futex list has futex_offset {off}, not {FUTEX_OFFSET}: not a 64-bit glibc list"),
            ));
        }
    }
    let m = Me { tid, gen, head };
    ME.with(|c| c.set(m));
    Ok(m)
}

/// The `i`-th word of the head (0: list, 1: futex_offset, 2: pending).
///
/// # Safety
/// `head` must be the calling thread's registered robust-list head.
#[inline]
unsafe fn head_word<'a>(head: usize, i: usize) -> &'a AtomicUsize {
    // SAFETY: per the contract, head points at three aligned words.
    unsafe { &*(head as *const AtomicUsize).add(i) }
}

/// The `prev` word of the list entry whose `next` field is at `entry`.
///
/// # Safety
/// `entry` (bit 0 masked) must be a live entry of the calling thread's list.
#[inline]
unsafe fn prev_of<'a>(entry: usize) -> &'a AtomicUsize {
    // SAFETY: every entry is preceded by its prev word (glibc's layout).
    unsafe { &*(((entry & !1) - 8) as *const AtomicUsize) }
}

impl conc_mutex {
    /// An unlocked mutex (all zero).
    pub const fn new() -> conc_mutex {
        conc_mutex {
            lock: AtomicU32::new(0),
            reserved: [0; 5],
            list_prev: AtomicU64::new(0),
            list_next: AtomicU64::new(0),
        }
    }

    #[inline]
    fn entry(&self) -> usize {
        &self.list_next as *const AtomicU64 as usize
    }

    #[inline]
    fn addr(&self) -> *const () {
        self as *const conc_mutex as *const ()
    }

    #[inline]
    fn set_pending(&self, me: Me, value: usize) {
        compiler_fence(Ordering::SeqCst);
        // SAFETY: me.head is this thread's registered head.
        unsafe { head_word(me.head, 2) }.store(value, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
    }

    /// Links this (just acquired) mutex at the front of the thread's list.
    #[inline]
    fn enqueue(&self, me: Me) {
        // SAFETY: me.head is this thread's head; its first entry is live
        // (only this thread edits its list).
        let list = unsafe { head_word(me.head, 0) };
        let first = list.load(Ordering::Relaxed);
        // SAFETY: `first` is the head itself or a live entry.
        unsafe { prev_of(first) }.store(self.entry(), Ordering::Relaxed);
        self.list_next.store(first as u64, Ordering::Relaxed);
        self.list_prev.store(me.head as u64, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        list.store(self.entry(), Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
    }

    /// Unlinks this (held) mutex from the thread's list.
    #[inline]
    fn dequeue(&self) {
        let next = self.list_next.load(Ordering::Relaxed) as usize;
        let prev = self.list_prev.load(Ordering::Relaxed) as usize;
        // SAFETY: a held mutex is linked in its holder's list, so its
        // neighbours are live entries of the calling thread's list.
        unsafe {
            prev_of(next).store(prev, Ordering::Relaxed);
            (*((prev & !1) as *const AtomicUsize)).store(next, Ordering::Relaxed);
        }
        compiler_fence(Ordering::SeqCst);
        self.list_prev.store(0, Ordering::Relaxed);
        self.list_next.store(0, Ordering::Relaxed);
    }

    /// Locks, waiting until `deadline`. `Ok(true)`: the previous holder
    /// died; the mutex is held and inconsistent (call [`Self::consistent`]
    /// after repairing). Errors: `DEADLOCK` (the caller holds it),
    /// `TIMED_OUT`, `INVALID_STATE` (unusable).
    ///
    /// For conc's own critical sections (a queue's ring, a list element),
    /// which hold the mutex for one copy of a few cache lines: a waiter
    /// spins [`SPIN_ROUNDS`] before sleeping, which pays when the holder
    /// is that brief (a queue between two processes moved 1.8x more
    /// messages per second with the spin than without).
    #[allow(dead_code)] // the internal API of the queues and lists
    pub(crate) fn lock(&self, deadline: Deadline) -> Result<bool> {
        let op = if deadline.is_never() {
            "conc_mutex_lock"
        } else {
            "conc_mutex_lock_timeout"
        };
        self.acquire_spin(op, Some(deadline), true)
    }

    /// Locks if free. `Ok(true)`: as for [`Self::lock`]. Errors: `BUSY`
    /// (held by anyone, the caller included), `INVALID_STATE` (unusable).
    #[allow(dead_code)] // the internal API of the queues and lists
    pub(crate) fn try_lock(&self) -> Result<bool> {
        self.acquire("conc_mutex_trylock", None)
    }

    /// Unlocks. Errors: `INVALID_STATE` when the caller does not hold it.
    /// Unlocking an inconsistent mutex makes it unusable.
    #[allow(dead_code)] // the internal API of the queues and lists
    pub(crate) fn unlock(&self) -> Result<()> {
        self.release("conc_mutex_unlock", false)
    }

    /// Marks an inconsistent mutex (after `OWNER_DEAD`) repaired. Errors:
    /// `INVALID_STATE` when it is not inconsistent or the caller does not
    /// hold it.
    pub(crate) fn consistent(&self) -> Result<()> {
        const OP: &str = "conc_mutex_consistent";
        let me = me(OP)?;
        let v = self.lock.load(Ordering::Relaxed);
        if v & TID_MASK != me.tid {
            return Err(Error::new(
                CONC_ERR_INVALID_STATE,
                format_args!("{OP}: the calling thread does not hold the mutex"),
            ));
        }
        if v & OWNER_DIED == 0 {
            return Err(Error::new(
                CONC_ERR_INVALID_STATE,
                format_args!("{OP}: the mutex is not inconsistent (no OWNER_DEAD to repair)"),
            ));
        }
        self.lock.fetch_and(!OWNER_DIED, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the calling thread holds the mutex (for the condition
    /// variable's check).
    pub(crate) fn held_by_caller(&self, op: &str) -> Result<bool> {
        let me = me(op)?;
        Ok(self.lock.load(Ordering::Relaxed) & TID_MASK == me.tid)
    }

    /// The uncontended lock: one CAS from free, plus the list linking.
    #[inline(always)]
    fn lock_fast(&self, me: Me) -> bool {
        self.set_pending(me, self.entry());
        let ok = self
            .lock
            .compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if ok {
            self.enqueue(me);
            crate::tsan::acquire(self.addr());
        }
        self.set_pending(me, 0);
        ok
    }

    /// The unlock of a consistent mutex held by the caller: one swap.
    #[inline(always)]
    fn unlock_fast(&self, me: Me) -> bool {
        let v = self.lock.load(Ordering::Relaxed);
        if v & !WAITERS != me.tid {
            return false;
        }
        self.set_pending(me, self.entry());
        self.dequeue();
        crate::tsan::release(self.addr());
        let old = self.lock.swap(0, Ordering::Release);
        if old & WAITERS != 0 {
            futex::wake(&self.lock, 1, Scope::Shared);
        }
        self.set_pending(me, 0);
        true
    }

    /// `deadline` None: a single try (BUSY when held). A held mutex is
    /// slept on at once, without spinning, as glibc's default mutex does:
    /// the caller knows nothing of the holder, which may keep the mutex
    /// long or take it back at once. Measured (two threads taking turns
    /// at 10M locked increments, 2 CPUs): 64 or 100 pause rounds, or a
    /// spin that adapts to whether it pays, made conc 1.4-1.9x slower
    /// than `pthread_mutex_t`, by keeping the lock's cache line from the
    /// holder, which mostly took the lock back before the spinner saw it
    /// free; no spin gives 0.85-1.35x.
    #[inline]
    pub(crate) fn acquire(&self, op: &'static str, deadline: Option<Deadline>) -> Result<bool> {
        self.acquire_spin(op, deadline, false)
    }

    /// [`Self::acquire`]; `spin` true: spin [`SPIN_ROUNDS`] before
    /// sleeping. For critical sections known to be short ([`Self::lock`])
    /// and for the condition variable's re-acquire after a wait that
    /// ended while spinning: the signaller is running on another CPU and
    /// about to unlock, so a short spin saves a sleep and a wake (a cond
    /// round trip between processes: 0.7 us with it, 10 us without). After
    /// a sleep it does not spin: the waker may be waiting for this very
    /// CPU, so spinning would only delay it.
    #[inline]
    pub(crate) fn acquire_spin(
        &self,
        op: &'static str,
        deadline: Option<Deadline>,
        spin: bool,
    ) -> Result<bool> {
        let me = me(op)?;
        if self.lock_fast(me) {
            return Ok(false);
        }
        self.set_pending(me, self.entry());
        let got = self.acquire_slow(op, me, deadline, spin);
        if got.is_ok() {
            self.enqueue(me);
            crate::tsan::acquire(self.addr());
        }
        self.set_pending(me, 0);
        got
    }

    #[cold]
    fn acquire_slow(
        &self,
        op: &'static str,
        me: Me,
        deadline: Option<Deadline>,
        spin: bool,
    ) -> Result<bool> {
        let mut slept = false;
        // No spinning for a try, nor for a timeout that has already
        // passed (a timeout of 0 polls once).
        let mut spins = match deadline {
            Some(d) if spin && !d.expired() => SPIN_ROUNDS,
            _ => 0,
        };
        loop {
            let v = self.lock.load(Ordering::Relaxed);
            let owner = v & TID_MASK;
            if owner == 0 {
                let w = if slept { WAITERS } else { v & WAITERS };
                let new = me.tid | (v & OWNER_DIED) | w;
                if self
                    .lock
                    .compare_exchange(v, new, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(v & OWNER_DIED != 0);
                }
                continue;
            }
            if owner == UNUSABLE {
                return Err(unusable(op));
            }
            if owner == me.tid {
                return Err(match deadline {
                    None => busy(op),
                    Some(_) => Error::new(
                        CONC_ERR_DEADLOCK,
                        format_args!("{op}: the calling thread already holds the mutex"),
                    ),
                });
            }
            let Some(deadline) = deadline else {
                return Err(busy(op));
            };
            if spins > 0 {
                spins -= 1;
                std::hint::spin_loop();
                continue;
            }
            if deadline.expired() {
                return Err(Error::new(
                    CONC_ERR_TIMED_OUT,
                    format_args!("{op}: the mutex is still held by another thread"),
                ));
            }
            if v & WAITERS == 0
                && self
                    .lock
                    .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            futex::wait_slice(&self.lock, v | WAITERS, deadline, SLICE_MS, Scope::Shared);
            slept = true;
        }
    }

    /// Releases the mutex held by the caller. `keep_dead`: an inconsistent
    /// mutex is handed on as "previous holder died" instead of becoming
    /// unusable (the condition variable's wait, which must release the
    /// mutex without deciding for the caller).
    pub(crate) fn release(&self, op: &str, keep_dead: bool) -> Result<()> {
        let me = me(op)?;
        let v = self.lock.load(Ordering::Relaxed);
        if v & TID_MASK != me.tid {
            return Err(Error::new(
                CONC_ERR_INVALID_STATE,
                format_args!("{op}: the calling thread does not hold the mutex"),
            ));
        }
        let target = if v & OWNER_DIED == 0 {
            0
        } else if keep_dead {
            OWNER_DIED
        } else {
            UNUSABLE
        };
        self.set_pending(me, self.entry());
        self.dequeue();
        crate::tsan::release(self.addr());
        let old = self.lock.swap(target, Ordering::Release);
        if old & WAITERS != 0 {
            if target == UNUSABLE {
                futex::wake_all(&self.lock, Scope::Shared);
            } else {
                futex::wake(&self.lock, 1, Scope::Shared);
            }
        }
        self.set_pending(me, 0);
        Ok(())
    }
}

impl Default for conc_mutex {
    fn default() -> Self {
        conc_mutex::new()
    }
}

fn busy(op: &str) -> Error {
    Error::new(CONC_ERR_BUSY, format_args!("{op}: the mutex is held"))
}

fn unusable(op: &str) -> Error {
    Error::new(
        CONC_ERR_INVALID_STATE,
        format_args!("{op}: the mutex is unusable: it was unlocked after OWNER_DEAD without conc_mutex_consistent (zero its memory to reuse it)"),
    )
}

/// The error for a successful acquire that met a dead holder.
pub(crate) fn owner_dead(op: &str) -> Error {
    Error::new(
        CONC_ERR_OWNER_DEAD,
        format_args!("{op}: the previous holder ended without unlocking; the caller holds the mutex now: repair the data, then call conc_mutex_consistent"),
    )
}

/// Checks a C pointer to a synchronization object: not NULL, 8-aligned.
pub(crate) fn check_ptr<T>(ptr: *const T, op: &str, arg: &str) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::null(op, arg));
    }
    if !(ptr as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err(Error::new(
            CONC_ERR_INVALID_ARGUMENT,
            format_args!(
                "{op}: `{arg}` is not {}-byte aligned",
                std::mem::align_of::<T>()
            ),
        ));
    }
    Ok(())
}

fn owner_status(op: &str, r: Result<bool>) -> Result<()> {
    if r? {
        Err(owner_dead(op))
    } else {
        Ok(())
    }
}

/// Runs `f` on the mutex behind `mutex` after checking the pointer.
#[inline]
unsafe fn with_mutex(
    op: &'static str,
    mutex: *mut conc_mutex,
    f: impl FnOnce(&conc_mutex) -> Result<()>,
) -> conc_status {
    guard(op, || {
        check_ptr(mutex, op, "mutex")?;
        // SAFETY: non-NULL and aligned; the caller promises it points to
        // a conc_mutex (all of whose fields are atomics or unused words).
        f(unsafe { &*mutex })
    })
}

/// Locks `mutex`, waiting as long as it takes.
///
/// Returns `CONC_OK` with the mutex held, or `CONC_ERR_OWNER_DEAD` with the
/// mutex held when the previous holder (a thread, in this or another
/// process) ended without unlocking it: the data it guards may be
/// half-updated; repair it and call `conc_mutex_consistent`.
/// `CONC_ERR_DEADLOCK`: the calling thread already holds it (nothing
/// changes). `CONC_ERR_INVALID_STATE`: the mutex is unusable (unlocked
/// after `OWNER_DEAD` without `conc_mutex_consistent`). NULL or a pointer
/// that is not 8-byte aligned: `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `mutex` must be NULL or point to a `conc_mutex` in memory that stays
/// mapped for the call (any bytes: all-zero is an unlocked mutex).
#[no_mangle]
pub unsafe extern "C" fn conc_mutex_lock(mutex: *mut conc_mutex) -> conc_status {
    if !mutex.is_null() && (mutex as usize).is_multiple_of(8) {
        if let Some(me) = me_cached() {
            // SAFETY: non-NULL, aligned, a conc_mutex per the contract.
            if unsafe { &*mutex }.lock_fast(me) {
                return conc_status::CONC_OK;
            }
        }
    }
    // SAFETY: forwarded pointer contract.
    unsafe { mutex_lock_slow(mutex) }
}

#[cold]
#[inline(never)]
unsafe fn mutex_lock_slow(mutex: *mut conc_mutex) -> conc_status {
    const OP: &str = "conc_mutex_lock";
    // SAFETY: forwarded pointer contract.
    unsafe {
        with_mutex(OP, mutex, |m| {
            owner_status(OP, m.acquire(OP, Some(Deadline::NEVER)))
        })
    }
}

/// Locks `mutex` if no one holds it, without waiting.
///
/// `CONC_OK` or `CONC_ERR_OWNER_DEAD` (mutex held) as `conc_mutex_lock`.
/// `CONC_ERR_BUSY`: someone holds it, the calling thread included; nothing
/// changed. `CONC_ERR_INVALID_STATE`: unusable. NULL or misaligned:
/// `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `mutex` must be NULL or point to a `conc_mutex` in memory that stays
/// mapped for the call (any bytes: all-zero is an unlocked mutex).
#[no_mangle]
pub unsafe extern "C" fn conc_mutex_trylock(mutex: *mut conc_mutex) -> conc_status {
    const OP: &str = "conc_mutex_trylock";
    // SAFETY: forwarded pointer contract.
    unsafe { with_mutex(OP, mutex, |m| owner_status(OP, m.acquire(OP, None))) }
}

/// Locks `mutex`, waiting at most `timeout_ms` milliseconds (monotonic
/// clock; 0 tries once).
///
/// `CONC_OK` or `CONC_ERR_OWNER_DEAD` (mutex held) as `conc_mutex_lock`.
/// `CONC_ERR_TIMED_OUT`: still held by another thread when the time ran
/// out; nothing changed. `CONC_ERR_DEADLOCK`: the calling thread holds it.
/// `CONC_ERR_INVALID_STATE`: unusable. NULL or misaligned:
/// `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `mutex` must be NULL or point to a `conc_mutex` in memory that stays
/// mapped for the call (any bytes: all-zero is an unlocked mutex).
#[no_mangle]
pub unsafe extern "C" fn conc_mutex_lock_timeout(
    mutex: *mut conc_mutex,
    timeout_ms: u64,
) -> conc_status {
    const OP: &str = "conc_mutex_lock_timeout";
    // SAFETY: forwarded pointer contract.
    unsafe {
        with_mutex(OP, mutex, |m| {
            owner_status(OP, m.acquire(OP, Some(Deadline::after_ms(timeout_ms))))
        })
    }
}

/// Unlocks `mutex`, held by the calling thread, and wakes a waiter.
///
/// After `CONC_ERR_OWNER_DEAD` without `conc_mutex_consistent`, the unlock
/// succeeds and leaves the mutex unusable: every later lock, trylock and
/// lock_timeout returns `CONC_ERR_INVALID_STATE` until its memory is
/// zeroed again. `CONC_ERR_INVALID_STATE`: the calling thread does not hold
/// it (another thread or process does, or no one); nothing changes. NULL or
/// misaligned: `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `mutex` must be NULL or point to a `conc_mutex` in memory that stays
/// mapped for the call (any bytes: all-zero is an unlocked mutex).
#[no_mangle]
pub unsafe extern "C" fn conc_mutex_unlock(mutex: *mut conc_mutex) -> conc_status {
    if !mutex.is_null() && (mutex as usize).is_multiple_of(8) {
        if let Some(me) = me_cached() {
            // SAFETY: non-NULL, aligned, a conc_mutex per the contract.
            if unsafe { &*mutex }.unlock_fast(me) {
                return conc_status::CONC_OK;
            }
        }
    }
    // SAFETY: forwarded pointer contract.
    unsafe { mutex_unlock_slow(mutex) }
}

#[cold]
#[inline(never)]
unsafe fn mutex_unlock_slow(mutex: *mut conc_mutex) -> conc_status {
    const OP: &str = "conc_mutex_unlock";
    // SAFETY: forwarded pointer contract.
    unsafe { with_mutex(OP, mutex, |m| m.release(OP, false)) }
}

/// Marks `mutex` consistent again after the caller got
/// `CONC_ERR_OWNER_DEAD` and repaired the guarded data; the mutex stays
/// held by the caller and works as usual from then on.
///
/// `CONC_ERR_INVALID_STATE`: the mutex is not in that state, or the calling
/// thread does not hold it. NULL or misaligned: `CONC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `mutex` must be NULL or point to a `conc_mutex` in memory that stays
/// mapped for the call (any bytes: all-zero is an unlocked mutex).
#[no_mangle]
pub unsafe extern "C" fn conc_mutex_consistent(mutex: *mut conc_mutex) -> conc_status {
    const OP: &str = "conc_mutex_consistent";
    // SAFETY: forwarded pointer contract.
    unsafe { with_mutex(OP, mutex, |m| m.consistent()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{CONC_ERR_INVALID_STATE, CONC_OK};
    use std::sync::Arc;

    fn st(r: Result<bool>) -> conc_status {
        match r {
            Ok(false) => CONC_OK,
            Ok(true) => CONC_ERR_OWNER_DEAD,
            Err(e) => e.status,
        }
    }

    #[test]
    fn lock_unlock_and_error_checks() {
        let m = conc_mutex::new();
        assert_eq!(st(m.lock(Deadline::NEVER)), CONC_OK);
        assert_eq!(st(m.lock(Deadline::NEVER)), CONC_ERR_DEADLOCK);
        assert_eq!(st(m.lock(Deadline::after_ms(0))), CONC_ERR_DEADLOCK);
        assert_eq!(st(m.try_lock()), CONC_ERR_BUSY);
        assert_eq!(m.consistent().unwrap_err().status, CONC_ERR_INVALID_STATE);
        m.unlock().unwrap();
        assert_eq!(m.unlock().unwrap_err().status, CONC_ERR_INVALID_STATE);
        assert_eq!(st(m.try_lock()), CONC_OK);
        m.unlock().unwrap();
        assert_eq!(m.lock.load(Ordering::Relaxed), 0);
        assert_eq!(m.list_next.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn other_thread_cannot_unlock_and_times_out() {
        let m = Arc::new(conc_mutex::new());
        m.lock(Deadline::NEVER).unwrap();
        let m2 = Arc::clone(&m);
        std::thread::spawn(move || {
            assert_eq!(m2.unlock().unwrap_err().status, CONC_ERR_INVALID_STATE);
            assert_eq!(st(m2.try_lock()), CONC_ERR_BUSY);
            let t = std::time::Instant::now();
            assert_eq!(st(m2.lock(Deadline::after_ms(30))), CONC_ERR_TIMED_OUT);
            assert!(t.elapsed() >= std::time::Duration::from_millis(30));
        })
        .join()
        .unwrap();
        m.unlock().unwrap();
    }

    #[test]
    fn holder_thread_exit_gives_owner_dead_then_unusable() {
        let m = Arc::new(conc_mutex::new());
        let m2 = Arc::clone(&m);
        std::thread::spawn(move || {
            m2.lock(Deadline::NEVER).unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(st(m.lock(Deadline::NEVER)), CONC_ERR_OWNER_DEAD);
        m.unlock().unwrap();
        assert_eq!(st(m.try_lock()), CONC_ERR_INVALID_STATE);
        assert_eq!(st(m.lock(Deadline::NEVER)), CONC_ERR_INVALID_STATE);
    }

    #[test]
    fn consistent_repairs() {
        let m = Arc::new(conc_mutex::new());
        let m2 = Arc::clone(&m);
        std::thread::spawn(move || {
            m2.lock(Deadline::NEVER).unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(st(m.try_lock()), CONC_ERR_OWNER_DEAD);
        m.consistent().unwrap();
        assert_eq!(m.consistent().unwrap_err().status, CONC_ERR_INVALID_STATE);
        m.unlock().unwrap();
        assert_eq!(st(m.try_lock()), CONC_OK);
        m.unlock().unwrap();
    }

    #[test]
    fn waiter_is_woken_by_holder_death() {
        let m = Arc::new(conc_mutex::new());
        let (tx, rx) = std::sync::mpsc::channel();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let m2 = Arc::clone(&m);
        let holder = std::thread::spawn(move || {
            m2.lock(Deadline::NEVER).unwrap();
            locked_tx.send(()).unwrap();
            rx.recv().unwrap();
        });
        // The waiter starts only once the holder holds the mutex (else it
        // could take the free mutex first and return CONC_OK).
        locked_rx.recv().unwrap();
        let m3 = Arc::clone(&m);
        let waiter = std::thread::spawn(move || st(m3.lock(Deadline::NEVER)));
        std::thread::sleep(std::time::Duration::from_millis(30));
        tx.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(waiter.join().unwrap(), CONC_ERR_OWNER_DEAD);
    }

    #[test]
    fn nested_locks_keep_the_list_intact() {
        let a = conc_mutex::new();
        let b = conc_mutex::new();
        let c = conc_mutex::new();
        a.lock(Deadline::NEVER).unwrap();
        b.lock(Deadline::NEVER).unwrap();
        c.lock(Deadline::NEVER).unwrap();
        b.unlock().unwrap(); // out of order
        a.unlock().unwrap();
        c.unlock().unwrap();
        let me = me("t").unwrap();
        // SAFETY: our own head.
        let list = unsafe { head_word(me.head, 0) }.load(Ordering::Relaxed);
        assert_eq!(list, me.head, "the list is empty again");
    }

    #[test]
    fn contention_counts_exactly() {
        struct Shared {
            m: conc_mutex,
            n: std::cell::UnsafeCell<u64>,
        }
        // SAFETY: n is only touched under m.
        unsafe impl Sync for Shared {}
        let s = Arc::new(Shared {
            m: conc_mutex::new(),
            n: std::cell::UnsafeCell::new(0),
        });
        let ts: Vec<_> = (0..4)
            .map(|_| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        s.m.lock(Deadline::NEVER).unwrap();
                        // SAFETY: guarded by the mutex.
                        unsafe { *s.n.get() += 1 };
                        s.m.unlock().unwrap();
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        // SAFETY: all threads joined.
        assert_eq!(unsafe { *s.n.get() }, 80_000);
    }

    #[test]
    fn c_abi_null_and_misaligned() {
        // SAFETY: NULL is refused before any access.
        assert_eq!(
            unsafe { conc_mutex_lock(std::ptr::null_mut()) },
            CONC_ERR_INVALID_ARGUMENT
        );
        let mut buf = [0u64; 8];
        let p = (buf.as_mut_ptr() as usize + 4) as *mut conc_mutex;
        // SAFETY: misaligned is refused before any access.
        assert_eq!(unsafe { conc_mutex_unlock(p) }, CONC_ERR_INVALID_ARGUMENT);
    }
}
