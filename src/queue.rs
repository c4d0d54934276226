//! Queues between processes: a bounded FIFO of messages in a named shared
//! memory segment, for any number of producers and consumers in any number
//! of processes, the counterpart of Python's `multiprocessing.Queue`
//! without pickling. No killed peer can wedge it.
//!
//! # Layout of the segment
//!
//! Native byte order (every process on one machine shares it):
//!
//! | offset | size | field                                                |
//! |--------|------|------------------------------------------------------|
//! | 0      | 8    | magic, `"concque\0"`, stored last                    |
//! | 8      | 4    | version, 1                                           |
//! | 12     | 4    | offset of the first slot, [`SLOTS`]                  |
//! | 16     | 8    | capacity, in messages                                |
//! | 24     | 8    | message size, in bytes                               |
//! | 32     | 8    | slot stride: 8 + message size, rounded up to 8       |
//! | 64     | 40   | the ring's robust mutex (`conc_mutex`, all-zero free)|
//! | 104    | 8    | head: messages popped so far                         |
//! | 112    | 8    | tail: messages pushed so far                         |
//! | 128    | 4    | shut down (0 or 1)                                   |
//! | 132    | 4    | "not empty" futex word: a sequence number            |
//! | 136    | 4    | "not full" futex word: a sequence number             |
//! | 140    | 4    | poppers waiting for "not empty"                      |
//! | 144    | 4    | pushers waiting for "not full"                       |
//! | 148    | 4    | wakes sent to poppers, not yet accounted for         |
//! | 152    | 4    | wakes sent to pushers, not yet accounted for         |
//! | 156    | 4    | times a holder of the mutex was found dead (a count  |
//! |        |      | for diagnostics and tests)                           |
//! | 256    | …    | `capacity` slots: length (8 bytes), then the bytes   |
//!
//! The mutex, head and tail share one cache line, the line every push and
//! pop writes; the rest, read by each but written only around sleeps and
//! at shutdown, has its own.
//!
//! Message `i` (counting from 0 since the queue was made) lives in slot
//! `i % capacity`; the queue holds messages `head..tail`. The creator
//! writes the geometry, then stores the magic with Release ordering;
//! `open` loads it with Acquire ordering before reading the rest and checks
//! the geometry against the segment's size, so an attach racing with a
//! create sees the whole header or refuses the segment as not (yet) a
//! queue (`CONC_ERR_INVALID_ARGUMENT`).
//!
//! # Pushing and popping
//!
//! Every operation on the ring happens under one robust mutex in the
//! segment (`crate::sync::mutex`): a message is at most a few cache lines,
//! so the critical section is a bounds check and one `memcpy`. A push
//! copies the length and bytes into slot `tail % capacity`, then stores
//! `tail + 1`; a pop copies slot `head % capacity` out to the caller's
//! buffer, then stores `head + 1`. **Those stores are the commit points.**
//!
//! Waiting does not hold the mutex. A popper that finds the queue empty
//! reads the "not empty" sequence number and counts itself in the waiter
//! count, both under the mutex, unlocks, and sleeps on the word with
//! `crate::sync::futex` (the one futex helper), then re-checks (and,
//! under the mutex again, takes itself and one sent wake off the counts).
//! A push that commits while more poppers are counted than wakes were
//! already sent to them counts one more wake and bumps the sequence
//! number under the mutex, and wakes one sleeper after unlocking; the
//! kernel's compare-and-sleep means a bump between the waiter's unlock and
//! its sleep makes the sleep return at once. So a burst of pushes to a
//! sleeping consumer makes one wake call, not one per message, and each of
//! several sleeping consumers still gets its own. Pushers waiting for room
//! are the mirror image. So an uncontended push or pop (nobody waiting) is a
//! lock, a copy, a store and an unlock: no system call. Before sleeping, a
//! waiter spins a short, bounded number of rounds reading head and tail
//! (no lock), which keeps a ping-pong between two processes out of the
//! kernel when the peer answers within microseconds.
//!
//! `try_` calls never wait for room or messages, and timed calls not past
//! their deadline; but both wait for the mutex itself, which is only held
//! for one copy, up to [`LOCK_GRACE_MS`] (only a holder that is stopped,
//! e.g. by SIGSTOP, can make that run out: `BUSY` or `TIMED_OUT`).
//!
//! Why a mutex and not a lock-free ring? With per-slot sequence numbers a
//! producer claims a slot before filling it, so a producer killed between
//! the two leaves a hole that consumers must detect and skip, and deciding
//! that a slow producer is dead rather than slow needs more than the
//! segment holds. Under the robust mutex every instant is accounted for
//! (below), and the kernel, not a timeout, says who died.
//!
//! Shutdown sets its flag under the mutex, so a push either committed
//! before it (and its message will be popped) or sees it and fails; then
//! it bumps both sequence numbers and wakes every sleeper.
//!
//! # Why a killed peer never breaks it
//!
//! Consider each instant a process can die (SIGKILL, say):
//!
//! - **Not holding the mutex** (spinning, sleeping, or between calls): it
//!   changes nothing the others depend on. If it was counted as a waiter,
//!   the count stays one too high: later pushes or pops make needless
//!   wake calls, never a missed one (a woken waiter that dies leaves both
//!   its count and its wake's, which cancel). If it had just been woken and dies
//!   before re-checking, the wake is lost; but every sleeper sleeps in
//!   bounded slices ([`SLICE_MS`]) and re-checks the ring after each, so a
//!   lost wake delays another waiter by at most one slice (see HAZARDS: a
//!   lost wakeup after SIGKILL).
//! - **Holding the mutex**: the mutex is robust, so the next process to
//!   lock it is told the owner died, marks it consistent and goes on. The
//!   ring it finds is consistent, because the only state a push or pop
//!   changes before its commit point is the content of a slot outside
//!   `head..tail` (a push writing its slot) or nothing at all (a pop
//!   reading its slot):
//!   - a producer killed before storing `tail + 1` leaves a half-written
//!     slot outside the queue, which the next push overwrites: its message
//!     is **absent**; killed after that store, the message was complete
//!     before it (the copy comes first in program order, and the store is a
//!     Release), so it is **whole**;
//!   - a consumer killed before storing `head + 1` leaves the message
//!     first in the queue for the next popper: nothing lost; killed after
//!     it, before returning to its caller, it loses **that one message**,
//!     which no one else can pop again: **no duplicate**;
//!   - a process killed between a commit and its wake, or between counting
//!     a wake and bumping the sequence number, only loses a wake: the
//!     sleeper it was meant for wakes at the end of its slice and takes the
//!     counted wake off, so the counts agree again.
//! - **Nobody waits for ever**: waits for the mutex end when it is
//!   unlocked or its dead owner is detected; waits for room or messages
//!   re-check at least every slice; a dead peer holds nothing else.
//!
//! Correctness never depends on anything outside the segment: no process
//! keeps state others need, and every process may die at any time.

use std::ffi::{c_char, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{
    conc_status, Error, Result, CONC_ERR_BUSY, CONC_ERR_OUT_OF_RANGE, CONC_ERR_RESOURCE_EXHAUSTED,
    CONC_ERR_SHUTDOWN, CONC_ERR_TIMED_OUT,
};
use crate::ffi::{c_str, guard, guard_value, out_ref};
use crate::handle;
use crate::shm::{Segment, ShowName};
use crate::sync::futex::{self, Deadline, Scope};

/// The ring's robust mutex.
type RingMutex = crate::sync::mutex::conc_mutex;

/// `"concque\0"` read as a native-endian u64.
const MAGIC: u64 = u64::from_ne_bytes(*b"concque\0");
const VERSION: u32 = 1;
/// Where the mutex, head and tail start: one cache line.
const RING_AT: usize = 64;
/// Where the flags, futex words and waiter counts start.
const CONTROL_AT: usize = 128;
/// Where the first slot starts.
const SLOTS: usize = 256;
/// The longest single futex sleep: a lost wake (a woken waiter killed
/// before it re-checked) delays another waiter by at most this.
const SLICE_MS: u64 = 10;
/// How many rounds a waiter spins, reading head and tail, before sleeping
/// (0.3 to 2 µs: a pause costs 10 to 75 ns, depending on the CPU), so a
/// peer that answers at once is caught without a sleep, and a loaded
/// machine loses little to spinning.
const SPIN_ROUNDS: u32 = 30;
/// How long `try_` calls (and timed calls whose time is shorter) wait for
/// the mutex itself, which is only held for one copy; only a holder that
/// is stopped (SIGSTOP) can make this run out.
const LOCK_GRACE_MS: u64 = 100;

/// The start of every queue segment.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    slots_at: AtomicU32,
    capacity: AtomicU64,
    message_size: AtomicU64,
    stride: AtomicU64,
}

/// What every push and pop writes, at [`RING_AT`].
#[repr(C)]
struct Ring {
    mutex: RingMutex,
    head: AtomicU64,
    tail: AtomicU64,
}

/// The flags, futex words and waiter counts, at [`CONTROL_AT`].
#[repr(C)]
struct Control {
    shutdown: AtomicU32,
    not_empty: AtomicU32,
    not_full: AtomicU32,
    empty_waiters: AtomicU32,
    full_waiters: AtomicU32,
    empty_wakes: AtomicU32,
    full_wakes: AtomicU32,
    repairs: AtomicU32,
}

/// One side's waiting bookkeeping: sleepers registered, and wakes sent to
/// them that no sleeper has accounted for yet. All under the mutex.
struct Waiters<'a> {
    word: &'a AtomicU32,
    sleepers: &'a AtomicU32,
    wakes: &'a AtomicU32,
}

impl Waiters<'_> {
    /// Called by a committer under the mutex: whether a sleeper needs a
    /// wake (one not already sent); if so, bumps the word and counts it.
    fn claim_wake(&self) -> bool {
        let sleepers = self.sleepers.load(Ordering::Relaxed);
        let wakes = self.wakes.load(Ordering::Relaxed);
        if sleepers > wakes {
            self.wakes.store(wakes + 1, Ordering::Relaxed);
            self.word.fetch_add(1, Ordering::Release);
            true
        } else {
            false
        }
    }

    /// Called by a waiter under the mutex before it sleeps: the word's
    /// value to sleep on.
    fn register(&self) -> u32 {
        self.sleepers.fetch_add(1, Ordering::Relaxed);
        self.word.load(Ordering::Relaxed)
    }

    /// Called by a waiter under the mutex after a sleep (woken or not).
    fn unregister(&self) {
        let s = self.sleepers.load(Ordering::Relaxed);
        self.sleepers.store(s.saturating_sub(1), Ordering::Relaxed);
        let w = self.wakes.load(Ordering::Relaxed);
        self.wakes.store(w.saturating_sub(1), Ordering::Relaxed);
    }
}

const _: () = assert!(std::mem::size_of::<Header>() <= RING_AT);
const _: () = assert!(std::mem::size_of::<Ring>() <= CONTROL_AT - RING_AT);
const _: () = assert!(std::mem::offset_of!(Ring, head) == 104 - RING_AT);
const _: () = assert!(std::mem::align_of::<RingMutex>() <= 8);
const _: () = assert!(CONTROL_AT + std::mem::size_of::<Control>() <= SLOTS);
const _: () = assert!(std::mem::offset_of!(Control, repairs) == 156 - CONTROL_AT);

/// The bytes of one slot for `message_size`-byte messages: the length,
/// then the message, rounded up to 8. None on overflow.
fn stride_for(message_size: usize) -> Option<usize> {
    message_size.checked_add(8 + 7).map(|n| n & !7)
}

/// The segment size for a queue of this geometry. None on overflow.
fn segment_size(capacity: usize, message_size: usize) -> Option<usize> {
    stride_for(message_size)?
        .checked_mul(capacity)?
        .checked_add(SLOTS)
        .filter(|&n| isize::try_from(n).is_ok())
}

/// A queue between processes in a named shared memory segment. Made by
/// `conc_queue_create` or `conc_queue_open`, released by
/// `conc_queue_close`.
#[allow(non_camel_case_types)]
pub struct conc_queue {
    segment: Segment,
    capacity: usize,
    message_size: usize,
    stride: usize,
}

impl handle::Object for conc_queue {
    const KIND: handle::Kind = handle::Kind::Queue;
}

/// How a push or pop waits.
#[derive(Clone, Copy)]
enum Wait {
    /// Until it can.
    Block,
    /// Not at all: `CONC_ERR_BUSY`.
    Try,
    /// Until the deadline: `CONC_ERR_TIMED_OUT`.
    Until(Deadline),
}

impl Wait {
    fn deadline(self) -> Deadline {
        match self {
            Wait::Until(d) => d,
            _ => Deadline::NEVER,
        }
    }
}

/// Unlocks the ring's mutex when dropped.
struct Locked<'a>(&'a RingMutex);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // The mutex was marked consistent when taken, and this thread
        // holds it: unlock cannot fail in a way the caller could act on.
        let _ = self.0.unlock();
    }
}

impl conc_queue {
    /// The header at the start of the segment.
    fn header(segment: &Segment) -> &Header {
        // SAFETY: every queue segment is at least SLOTS bytes (checked in
        // create and open), page-aligned, and Header is all atomics.
        unsafe { &*segment.as_ptr().cast::<Header>() }
    }

    fn control(&self) -> &Control {
        // SAFETY: CONTROL_AT + size_of::<Control>() <= SLOTS <= size, and
        // the offset is 8-aligned in a page-aligned mapping; all atomics.
        unsafe { &*self.segment.as_ptr().add(CONTROL_AT).cast::<Control>() }
    }

    fn ring(&self) -> &Ring {
        // SAFETY: as for `control`: in bounds, 8-aligned, and a Ring is
        // valid for any bytes it may hold (all-zero: an unlocked mutex, an
        // empty queue).
        unsafe { &*self.segment.as_ptr().add(RING_AT).cast::<Ring>() }
    }

    fn mutex(&self) -> &RingMutex {
        &self.ring().mutex
    }

    /// Slot `i % capacity`: its length word and its first message byte.
    fn slot(&self, i: u64) -> (&AtomicU64, *mut u8) {
        let index = (i % self.capacity as u64) as usize;
        // SAFETY: index < capacity, and create/open checked that
        // SLOTS + capacity * stride fits the segment; the offset is
        // 8-aligned (stride is a multiple of 8).
        unsafe {
            let p = self.segment.as_ptr().add(SLOTS + index * self.stride);
            (&*p.cast::<AtomicU64>(), p.add(8))
        }
    }

    /// Takes the ring's mutex for `op`, repairing it if its holder died.
    fn lock(&self, op: &str, wait: Wait) -> Result<Locked<'_>> {
        let deadline = match wait {
            Wait::Block => Deadline::NEVER,
            Wait::Try => Deadline::after_ms(LOCK_GRACE_MS),
            Wait::Until(d) => match d.remaining_ms() {
                Some(ms) if ms < LOCK_GRACE_MS => Deadline::after_ms(LOCK_GRACE_MS),
                _ => d,
            },
        };
        let m = self.mutex();
        match m.lock(deadline) {
            Ok(owner_died) => {
                let held = Locked(m);
                if owner_died {
                    // The ring is consistent at every instant (see the
                    // module comment): only the mutex needs repair.
                    m.consistent()?;
                    self.control().repairs.fetch_add(1, Ordering::Relaxed);
                }
                Ok(held)
            }
            Err(e) if e.status == CONC_ERR_TIMED_OUT => Err(match wait {
                Wait::Try => Error::new(
                    CONC_ERR_BUSY,
                    format_args!("{op}: the queue's lock is held (its holder may be stopped)"),
                ),
                _ => Error::new(
                    CONC_ERR_TIMED_OUT,
                    format_args!("{op}: timed out waiting for the queue's lock"),
                ),
            }),
            Err(e) => Err(Error::new(
                e.status,
                format_args!("{op}: the queue's lock: {}", e.message),
            )),
        }
    }

    fn not_empty(&self) -> Waiters<'_> {
        let c = self.control();
        Waiters {
            word: &c.not_empty,
            sleepers: &c.empty_waiters,
            wakes: &c.empty_wakes,
        }
    }

    fn not_full(&self) -> Waiters<'_> {
        let c = self.control();
        Waiters {
            word: &c.not_full,
            sleepers: &c.full_waiters,
            wakes: &c.full_wakes,
        }
    }

    /// Refuses a message longer than the message size, at once.
    fn check_len(&self, op: &str, len: usize) -> Result<()> {
        if len > self.message_size {
            return Err(Error::new(
                CONC_ERR_OUT_OF_RANGE,
                format_args!(
                    "{op}: a message of {len} bytes is longer than the queue's message size, {}",
                    self.message_size
                ),
            ));
        }
        Ok(())
    }

    fn push(&self, op: &str, message: &[u8], wait: Wait) -> Result<()> {
        self.check_len(op, message.len())?;
        let c = self.control();
        let r = self.ring();
        let capacity = self.capacity as u64;
        let mut spun = matches!(wait, Wait::Try);
        let mut slept = false;
        loop {
            if !spun {
                spun = true;
                futex::spin_until(SPIN_ROUNDS, || {
                    let head = r.head.load(Ordering::Relaxed);
                    r.tail.load(Ordering::Relaxed).wrapping_sub(head) < capacity
                        || c.shutdown.load(Ordering::Relaxed) != 0
                });
            }
            let locked = self.lock(op, wait)?;
            if std::mem::take(&mut slept) {
                self.not_full().unregister();
            }
            if c.shutdown.load(Ordering::Relaxed) != 0 {
                return Err(Error::new(
                    CONC_ERR_SHUTDOWN,
                    format_args!("{op}: the queue {} is shut down", self.shown()),
                ));
            }
            let head = r.head.load(Ordering::Relaxed);
            let tail = r.tail.load(Ordering::Relaxed);
            if tail.wrapping_sub(head) < capacity {
                let (len, bytes) = self.slot(tail);
                len.store(message.len() as u64, Ordering::Relaxed);
                // SAFETY: the slot holds message_size >= message.len()
                // bytes, outside head..tail, so no popper reads it; the
                // caller's message does not overlap the segment's slots
                // (it would have to be a slot outside the queue).
                unsafe { ptr::copy_nonoverlapping(message.as_ptr(), bytes, message.len()) };
                crate::tsan::release(bytes.cast_const().cast());
                // The commit point: the message is whole before this.
                r.tail.store(tail + 1, Ordering::Release);
                let wake = self.not_empty().claim_wake();
                drop(locked);
                if wake {
                    futex::wake(&c.not_empty, 1, Scope::Shared);
                }
                return Ok(());
            }
            self.may_wait(op, wait, "full")?;
            let seen = self.not_full().register();
            slept = true;
            drop(locked);
            futex::wait(
                &c.not_full,
                seen,
                wait.deadline().slice(SLICE_MS),
                Scope::Shared,
            );
        }
    }

    /// Pops into `buf` (`buf_size` bytes, NULL only when 0), returning
    /// the message's length; on a too-small buffer `CONC_ERR_OUT_OF_RANGE`
    /// with the needed size in `*need`.
    fn pop(
        &self,
        op: &str,
        buf: *mut u8,
        buf_size: usize,
        need: &mut usize,
        wait: Wait,
    ) -> Result<usize> {
        let c = self.control();
        let r = self.ring();
        let mut spun = matches!(wait, Wait::Try);
        let mut slept = false;
        loop {
            if !spun {
                spun = true;
                futex::spin_until(SPIN_ROUNDS, || {
                    r.tail.load(Ordering::Relaxed) != r.head.load(Ordering::Relaxed)
                        || c.shutdown.load(Ordering::Relaxed) != 0
                });
            }
            let locked = self.lock(op, wait)?;
            if std::mem::take(&mut slept) {
                self.not_empty().unregister();
            }
            let head = r.head.load(Ordering::Relaxed);
            let tail = r.tail.load(Ordering::Relaxed);
            if tail != head {
                let (len, bytes) = self.slot(head);
                crate::tsan::acquire(bytes.cast_const().cast());
                // A length is at most message_size when written; the min
                // keeps a corrupted segment from reading past the slot.
                let n = (len.load(Ordering::Relaxed).min(self.message_size as u64)) as usize;
                if n > buf_size {
                    *need = n;
                    return Err(Error::new(
                        CONC_ERR_OUT_OF_RANGE,
                        format_args!(
                            "{op}: the next message has {n} bytes, the buffer {buf_size}; it stays first in the queue"
                        ),
                    ));
                }
                if n > 0 {
                    // SAFETY: the slot holds n <= message_size bytes of a
                    // committed message; buf is valid for buf_size >= n
                    // bytes (caller contract) and is not in the segment's
                    // slots that the queue owns.
                    unsafe { ptr::copy_nonoverlapping(bytes.cast_const(), buf, n) };
                }
                // The commit point: the message is copied out before this.
                r.head.store(head + 1, Ordering::Release);
                let wake = self.not_full().claim_wake();
                drop(locked);
                if wake {
                    futex::wake(&c.not_full, 1, Scope::Shared);
                }
                return Ok(n);
            }
            if c.shutdown.load(Ordering::Relaxed) != 0 {
                return Err(Error::new(
                    CONC_ERR_SHUTDOWN,
                    format_args!("{op}: the queue {} is shut down and empty", self.shown()),
                ));
            }
            self.may_wait(op, wait, "empty")?;
            let seen = self.not_empty().register();
            slept = true;
            drop(locked);
            futex::wait(
                &c.not_empty,
                seen,
                wait.deadline().slice(SLICE_MS),
                Scope::Shared,
            );
        }
    }

    fn shutdown(&self, op: &str) -> Result<()> {
        let c = self.control();
        let locked = self.lock(op, Wait::Block)?;
        c.shutdown.store(1, Ordering::Release);
        c.not_empty.fetch_add(1, Ordering::Release);
        c.not_full.fetch_add(1, Ordering::Release);
        drop(locked);
        futex::wake_all(&c.not_empty, Scope::Shared);
        futex::wake_all(&c.not_full, Scope::Shared);
        Ok(())
    }

    fn len(&self) -> usize {
        let r = self.ring();
        let head = r.head.load(Ordering::Acquire);
        let tail = r.tail.load(Ordering::Acquire);
        (tail.saturating_sub(head)).min(self.capacity as u64) as usize
    }

    fn shown(&self) -> ShowName<'_> {
        ShowName(Some(self.segment.name()))
    }

    /// Whether a push or pop that found the queue `state` ("full",
    /// "empty") may sleep: `CONC_ERR_BUSY` for a try, `CONC_ERR_TIMED_OUT`
    /// once the deadline has passed.
    fn may_wait(&self, op: &str, wait: Wait, state: &str) -> Result<()> {
        match wait {
            Wait::Try => Err(Error::new(
                CONC_ERR_BUSY,
                format_args!("{op}: the queue {} is {state}", self.shown()),
            )),
            Wait::Until(d) if d.expired() => Err(Error::new(
                CONC_ERR_TIMED_OUT,
                format_args!("{op}: the queue {} stayed {state}", self.shown()),
            )),
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------
// The C API

/// Checks a `(message, len)` pair: NULL is allowed only with `len` 0.
///
/// # Safety
/// `message` must be NULL or valid for reads of `len` bytes.
unsafe fn message_bytes<'a>(message: *const c_void, len: usize, op: &str) -> Result<&'a [u8]> {
    // SAFETY: caller contract.
    unsafe { crate::ffi::bytes(message.cast(), len, op, "message") }
}

/// Checks a pop's buffer: `buf` may be NULL only when `buf_size` is 0.
fn check_buf(buf: *mut c_void, buf_size: usize, op: &str) -> Result<()> {
    if buf.is_null() && buf_size != 0 {
        return Err(Error::invalid(format_args!(
            "{op}: argument `buf` is NULL with buf_size {buf_size}"
        )));
    }
    Ok(())
}

/// Creates a new queue between processes: a bounded FIFO of up to
/// `capacity` messages of 0 to `message_size` bytes each, in a new shared
/// memory segment named `name` (the `conc_shm_create` naming rules; NULL
/// picks a fresh random `psm_` name) that other processes attach to with
/// `conc_queue_open(name)`.
///
/// The segment has the shared-memory guarantees: it is new (`O_EXCL`),
/// mode 0600 whatever the umask, its memory reserved now (a full
/// `/dev/shm` fails here, never with SIGBUS later), and no name is left
/// behind when create fails. Its header is published last, so an open
/// racing with this create never sees half a queue.
///
/// On success `*out` is the new handle, owned by the caller until
/// `conc_queue_close`; the queue itself stays until `conc_queue_unlink`
/// and the last close. On failure `*out` is NULL.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`out` NULL, bad name, `capacity`
/// or `message_size` 0), `CONC_ERR_ALREADY_EXISTS` (the name is taken),
/// `CONC_ERR_RESOURCE_EXHAUSTED` (no space in `/dev/shm`, no memory, or a
/// geometry no segment can hold), `CONC_ERR_PERMISSION_DENIED`,
/// `CONC_ERR_IO`.
///
/// # Safety
/// `out` must be NULL or valid for writes; `name` NULL or a NUL-terminated
/// string.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_create(
    out: *mut *mut conc_queue,
    name: *const c_char,
    capacity: usize,
    message_size: usize,
) -> conc_status {
    const OP: &str = "conc_queue_create";
    guard(OP, || {
        // SAFETY: out is NULL or valid for writes (caller contract).
        let out = unsafe { out_ref(out, OP, "out") }?;
        *out = ptr::null_mut();
        let name = if name.is_null() {
            None
        } else {
            // SAFETY: non-NULL and NUL-terminated (caller contract).
            Some(unsafe { CStr::from_ptr(name) })
        };
        let call = || crate::msg!("{OP}({}, {capacity}, {message_size})", ShowName(name));
        if capacity == 0 || message_size == 0 {
            return Err(Error::invalid(format_args!(
                "{}: the {} is 0",
                call(),
                if capacity == 0 {
                    "capacity"
                } else {
                    "message size"
                }
            )));
        }
        let (Some(stride), Some(size)) = (
            stride_for(message_size),
            segment_size(capacity, message_size),
        ) else {
            return Err(Error::new(
                CONC_ERR_RESOURCE_EXHAUSTED,
                format_args!("{}: larger than the largest possible segment", call()),
            ));
        };
        let segment =
            Segment::create(OP, name, size, format_args!(", {capacity}, {message_size}"))?;
        let header = conc_queue::header(&segment);
        header.version.store(VERSION, Ordering::Relaxed);
        header.slots_at.store(SLOTS as u32, Ordering::Relaxed);
        header.capacity.store(capacity as u64, Ordering::Relaxed);
        header
            .message_size
            .store(message_size as u64, Ordering::Relaxed);
        header.stride.store(stride as u64, Ordering::Relaxed);
        // Published last: whoever sees the magic sees the fields above
        // (and the zero-filled ring: an unlocked mutex, an empty queue).
        header.magic.store(MAGIC, Ordering::Release);
        // The name, kept on the stack (no allocation) so that it can be
        // removed if publishing the handle fails.
        let mut path = [0u8; crate::shm::MAX_NAME_LEN + 2];
        let bare = segment.name().to_bytes_with_nul();
        path[..bare.len()].copy_from_slice(bare);
        let queue = conc_queue {
            segment,
            capacity,
            message_size,
            stride,
        };
        match handle::publish(queue) {
            Ok(h) => {
                *out = h;
                Ok(())
            }
            Err(e) => {
                // publish dropped (unmapped) the queue: remove its name.
                if let Ok(name) = CStr::from_bytes_until_nul(&path) {
                    let _ = crate::shm::unlink_name(OP, name);
                }
                Err(e)
            }
        }
    })
}

/// Attaches to the existing queue `name`, taking its capacity and message
/// size from the segment. A forked child shares its parent's queues, like
/// its `conc_shm` mappings; other processes open them by name.
///
/// On success `*out` is the new handle, owned by the caller until
/// `conc_queue_close`; on failure NULL.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`out` or `name` NULL, bad name, a
/// segment that is not a conc queue, e.g. one made by `conc_shm_create`,
/// or one whose creator has not finished writing its header),
/// `CONC_ERR_NOT_FOUND`, `CONC_ERR_PERMISSION_DENIED`,
/// `CONC_ERR_RESOURCE_EXHAUSTED`, `CONC_ERR_IO`.
///
/// # Safety
/// `out` must be NULL or valid for writes; `name` NULL or a NUL-terminated
/// string.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_open(
    out: *mut *mut conc_queue,
    name: *const c_char,
) -> conc_status {
    const OP: &str = "conc_queue_open";
    guard(OP, || {
        // SAFETY: out is NULL or valid for writes (caller contract).
        let out = unsafe { out_ref(out, OP, "out") }?;
        *out = ptr::null_mut();
        // SAFETY: name is NULL or NUL-terminated (caller contract).
        let name = unsafe { c_str(name, OP, "name") }?;
        let segment = Segment::open(OP, name)?;
        let not_a_queue = |why: &str| {
            Error::invalid(format_args!(
                "{OP}({}): not a conc queue ({why})",
                ShowName(Some(name))
            ))
        };
        if segment.size() < SLOTS {
            return Err(not_a_queue("too small for a queue header"));
        }
        let header = conc_queue::header(&segment);
        if header.magic.load(Ordering::Acquire) != MAGIC {
            return Err(not_a_queue("no queue header, or one still being written"));
        }
        let version = header.version.load(Ordering::Relaxed);
        if version != VERSION {
            return Err(not_a_queue(&crate::msg!("unknown queue version {version}")));
        }
        let capacity = usize::try_from(header.capacity.load(Ordering::Relaxed)).unwrap_or(0);
        let message_size =
            usize::try_from(header.message_size.load(Ordering::Relaxed)).unwrap_or(0);
        let stride = header.stride.load(Ordering::Relaxed);
        let geometry_ok = header.slots_at.load(Ordering::Relaxed) as usize == SLOTS
            && capacity > 0
            && message_size > 0
            && stride_for(message_size).is_some_and(|s| s as u64 == stride)
            && segment_size(capacity, message_size).is_some_and(|n| n <= segment.size());
        if !geometry_ok {
            return Err(not_a_queue(&crate::msg!(
                "a capacity of {capacity} messages of {message_size} bytes does not fit its {} bytes",
                segment.size()
            )));
        }
        *out = handle::publish(conc_queue {
            segment,
            capacity,
            message_size,
            stride: stride as usize,
        })?;
        Ok(())
    })
}

/// The push calls, once their wait is known.
///
/// # Safety
/// As for `conc_queue_push`.
unsafe fn push_common(
    op: &'static str,
    queue: *mut conc_queue,
    message: *const c_void,
    len: usize,
    wait: impl FnOnce() -> Wait,
) -> conc_status {
    guard(op, || {
        let q = handle::get(queue, op, "queue")?;
        // Before the slice is made: `len` may be any size.
        q.check_len(op, len)?;
        // SAFETY: caller contract.
        let m = unsafe { message_bytes(message, len, op) }?;
        q.push(op, m, wait())
    })
}

/// Pushes the `len` bytes at `message` (0 to `conc_queue_message_size`;
/// `message` may be NULL when `len` is 0), waiting while the queue is
/// full. The message keeps its length.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`queue` NULL, `message` NULL with
/// `len` > 0), `CONC_ERR_INVALID_STATE` (closed or forged handle),
/// `CONC_ERR_OUT_OF_RANGE` (`len` over the message size, at once, whatever
/// the queue's state; nothing pushed), `CONC_ERR_SHUTDOWN` (the queue is
/// shut down, before or while waiting; nothing pushed).
///
/// # Safety
/// `queue` must be NULL or a handle from this library; `message` NULL or
/// valid for reads of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_push(
    queue: *mut conc_queue,
    message: *const c_void,
    len: usize,
) -> conc_status {
    // SAFETY: forwarded caller contract.
    unsafe { push_common("conc_queue_push", queue, message, len, || Wait::Block) }
}

/// Like `conc_queue_push`, but never waits: `CONC_ERR_BUSY` when the queue
/// is full (nothing pushed).
///
/// # Safety
/// As for `conc_queue_push`.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_try_push(
    queue: *mut conc_queue,
    message: *const c_void,
    len: usize,
) -> conc_status {
    // SAFETY: forwarded caller contract.
    unsafe { push_common("conc_queue_try_push", queue, message, len, || Wait::Try) }
}

/// Like `conc_queue_push`, but waits at most `timeout_ms` milliseconds (on
/// the monotonic clock; 0 polls once) for room: `CONC_ERR_TIMED_OUT` when
/// the queue stayed full (nothing pushed).
///
/// # Safety
/// As for `conc_queue_push`.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_push_timeout(
    queue: *mut conc_queue,
    message: *const c_void,
    len: usize,
    timeout_ms: u64,
) -> conc_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        push_common("conc_queue_push_timeout", queue, message, len, || {
            Wait::Until(Deadline::after_ms(timeout_ms))
        })
    }
}

fn pop_common(
    op: &'static str,
    queue: *mut conc_queue,
    buf: *mut c_void,
    buf_size: usize,
    len: *mut usize,
    wait: impl FnOnce() -> Wait,
) -> conc_status {
    guard(op, || {
        let q = handle::get(queue, op, "queue")?;
        check_buf(buf, buf_size, op)?;
        // SAFETY: len is NULL or valid for writes (caller contract).
        let len = unsafe { out_ref(len, op, "len") }?;
        let n = q.pop(op, buf.cast(), buf_size, len, wait())?;
        *len = n;
        Ok(())
    })
}

/// Pops the first message into `buf` (`buf_size` bytes), setting `*len`
/// to its length, waiting while the queue is empty. Messages of one
/// producer come out in the order it pushed them, each exactly once.
///
/// When `buf_size` is smaller than the first message,
/// `CONC_ERR_OUT_OF_RANGE` with `*len` set to the size it needs (the one
/// failure that writes an output), and the message stays first in the
/// queue. `buf` may be NULL when `buf_size` is 0: a size probe
/// (`CONC_ERR_OUT_OF_RANGE` with `*len`, or `CONC_OK` for an empty
/// message, which is then popped).
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`queue` or `len` NULL, `buf` NULL
/// with `buf_size` > 0), `CONC_ERR_INVALID_STATE` (closed or forged
/// handle), `CONC_ERR_OUT_OF_RANGE` (above), `CONC_ERR_SHUTDOWN` (the
/// queue is shut down and empty, before or while waiting).
///
/// # Safety
/// `queue` must be NULL or a handle from this library; `buf` NULL or valid
/// for writes of `buf_size` bytes; `len` NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_pop(
    queue: *mut conc_queue,
    buf: *mut c_void,
    buf_size: usize,
    len: *mut usize,
) -> conc_status {
    pop_common("conc_queue_pop", queue, buf, buf_size, len, || Wait::Block)
}

/// Like `conc_queue_pop`, but never waits: `CONC_ERR_BUSY` when the queue
/// is empty (and not shut down).
///
/// # Safety
/// As for `conc_queue_pop`.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_try_pop(
    queue: *mut conc_queue,
    buf: *mut c_void,
    buf_size: usize,
    len: *mut usize,
) -> conc_status {
    pop_common("conc_queue_try_pop", queue, buf, buf_size, len, || {
        Wait::Try
    })
}

/// Like `conc_queue_pop`, but waits at most `timeout_ms` milliseconds (on
/// the monotonic clock; 0 polls once) for a message: `CONC_ERR_TIMED_OUT`
/// when the queue stayed empty.
///
/// # Safety
/// As for `conc_queue_pop`.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_pop_timeout(
    queue: *mut conc_queue,
    timeout_ms: u64,
    buf: *mut c_void,
    buf_size: usize,
    len: *mut usize,
) -> conc_status {
    pop_common("conc_queue_pop_timeout", queue, buf, buf_size, len, || {
        Wait::Until(Deadline::after_ms(timeout_ms))
    })
}

/// Shuts the queue down, for every process: from now on every push, and
/// every pusher waiting, gets `CONC_ERR_SHUTDOWN`; pops go on until the
/// queue is empty, then every pop, and every popper waiting, gets
/// `CONC_ERR_SHUTDOWN`. A second shutdown is `CONC_OK`. It cannot be
/// undone.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`queue` NULL),
/// `CONC_ERR_INVALID_STATE` (closed or forged handle).
///
/// # Safety
/// `queue` must be NULL or a handle from this library.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_shutdown(queue: *mut conc_queue) -> conc_status {
    const OP: &str = "conc_queue_shutdown";
    guard(OP, || handle::get(queue, OP, "queue")?.shutdown(OP))
}

/// Returns how many messages are waiting: a snapshot, which other
/// processes may change at once. 0 when `queue` is NULL or not a live
/// handle.
///
/// # Safety
/// `queue` must be NULL or a handle from this library.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_len(queue: *const conc_queue) -> usize {
    guard_value("conc_queue_len", 0, || {
        handle::lookup(queue).map_or(0, conc_queue::len)
    })
}

/// Returns how many messages the queue holds at most, fixed at create.
/// 0 when `queue` is NULL or not a live handle.
///
/// # Safety
/// `queue` must be NULL or a handle from this library.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_capacity(queue: *const conc_queue) -> usize {
    guard_value("conc_queue_capacity", 0, || {
        handle::lookup(queue).map_or(0, |q| q.capacity)
    })
}

/// Returns the longest message, in bytes, fixed at create. 0 when `queue`
/// is NULL or not a live handle.
///
/// # Safety
/// `queue` must be NULL or a handle from this library.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_message_size(queue: *const conc_queue) -> usize {
    guard_value("conc_queue_message_size", 0, || {
        handle::lookup(queue).map_or(0, |q| q.message_size)
    })
}

/// Returns the queue's segment name without a leading `/` (e.g.
/// `"psm_1f2e3d4c"`), the name other processes pass to `conc_queue_open`.
/// Owned by the handle, valid until `conc_queue_close`. `""` when `queue`
/// is NULL or not a live handle.
///
/// # Safety
/// `queue` must be NULL or a handle from this library.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_name(queue: *const conc_queue) -> *const c_char {
    guard_value("conc_queue_name", c"".as_ptr(), || {
        handle::lookup(queue).map_or(c"".as_ptr(), |q| q.segment.name().as_ptr())
    })
}

/// Removes the queue's name: no process can open it any more, and its
/// memory goes back to the OS once every process has closed it. Handles
/// already open, this one included, stay usable until closed. Call it
/// once, from one process.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`queue` NULL),
/// `CONC_ERR_INVALID_STATE` (closed or forged handle), `CONC_ERR_NOT_FOUND`
/// (this handle unlinked it already, or the name is gone),
/// `CONC_ERR_PERMISSION_DENIED`, `CONC_ERR_IO`.
///
/// # Safety
/// `queue` must be NULL or a handle from this library.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_unlink(queue: *const conc_queue) -> conc_status {
    const OP: &str = "conc_queue_unlink";
    guard(OP, || handle::get(queue, OP, "queue")?.segment.unlink(OP))
}

/// Unmaps the queue and frees the handle; the queue and its name stay
/// (see `conc_queue_unlink`), and its messages with them. The pointer from
/// `conc_queue_name` is invalid afterwards. No other thread may be using
/// the handle.
///
/// NULL is a no-op returning `CONC_OK`. Errors: `CONC_ERR_INVALID_STATE`
/// for a handle closed already, or never made by conc (left alone).
///
/// # Safety
/// `queue` must be NULL or a handle from this library.
#[no_mangle]
pub unsafe extern "C" fn conc_queue_close(queue: *mut conc_queue) -> conc_status {
    const OP: &str = "conc_queue_close";
    guard(OP, || {
        if queue.is_null() {
            return Ok(());
        }
        drop(handle::release(queue, OP, "queue")?);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::*;
    use crate::shm::tests::{in_dev_shm, shm_lock, unique};
    use std::ffi::CString;

    fn create(name: Option<&CStr>, capacity: usize, message_size: usize) -> *mut conc_queue {
        let mut q = ptr::null_mut();
        let name = name.map_or(ptr::null(), CStr::as_ptr);
        // SAFETY: valid out pointer; name NULL or a C string.
        let st = unsafe { conc_queue_create(&mut q, name, capacity, message_size) };
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        q
    }

    fn push(q: *mut conc_queue, m: &[u8]) -> conc_status {
        // SAFETY: m is valid for its length.
        unsafe { conc_queue_try_push(q, m.as_ptr().cast(), m.len()) }
    }

    fn pop(q: *mut conc_queue) -> std::result::Result<Vec<u8>, conc_status> {
        let mut buf = vec![0u8; 256];
        let mut n = 0usize;
        // SAFETY: buf is valid for its length, n for writes.
        let st = unsafe { conc_queue_try_pop(q, buf.as_mut_ptr().cast(), buf.len(), &mut n) };
        if st == CONC_OK {
            buf.truncate(n);
            Ok(buf)
        } else {
            Err(st)
        }
    }

    fn close(q: *mut conc_queue) {
        // SAFETY: a live handle.
        unsafe {
            let _ = conc_queue_unlink(q);
            assert_eq!(conc_queue_close(q), CONC_OK);
        }
    }

    #[test]
    fn geometry() {
        assert_eq!(stride_for(1), Some(16));
        assert_eq!(stride_for(8), Some(16));
        assert_eq!(stride_for(9), Some(24));
        assert_eq!(stride_for(64), Some(72));
        assert_eq!(stride_for(usize::MAX), None);
        assert_eq!(segment_size(4, 8), Some(256 + 64));
        assert_eq!(segment_size(usize::MAX, 8), None);
        assert_eq!(segment_size(usize::MAX / 16, 8), None);
    }

    #[test]
    fn round_trip_lengths_and_order() {
        let _lock = shm_lock();
        let name = unique("q_rt");
        let q = create(Some(&name), 3, 5);
        assert!(in_dev_shm(&name));
        // SAFETY: live handle.
        unsafe {
            assert_eq!(conc_queue_capacity(q), 3);
            assert_eq!(conc_queue_message_size(q), 5);
            assert_eq!(CStr::from_ptr(conc_queue_name(q)), name.as_c_str());
        }
        assert_eq!(push(q, b""), CONC_OK);
        assert_eq!(push(q, b"abcde"), CONC_OK);
        assert_eq!(push(q, b"xy"), CONC_OK);
        assert_eq!(push(q, b"z"), CONC_ERR_BUSY);
        assert_eq!(push(q, b"123456"), CONC_ERR_OUT_OF_RANGE);
        // SAFETY: live handle.
        assert_eq!(unsafe { conc_queue_len(q) }, 3);
        assert_eq!(pop(q), Ok(vec![]));
        assert_eq!(pop(q), Ok(b"abcde".to_vec()));
        assert_eq!(pop(q), Ok(b"xy".to_vec()));
        assert_eq!(pop(q), Err(CONC_ERR_BUSY));
        close(q);
        assert!(!in_dev_shm(&name));
    }

    #[test]
    fn small_buffer_reports_the_size_and_keeps_the_message() {
        let _lock = shm_lock();
        let q = create(None, 2, 16);
        assert_eq!(push(q, b"0123456789"), CONC_OK);
        let mut n = 0usize;
        let mut buf = [0u8; 4];
        // SAFETY: buf valid for 4 bytes; NULL with 0 is a probe.
        unsafe {
            assert_eq!(
                conc_queue_pop(q, buf.as_mut_ptr().cast(), 4, &mut n),
                CONC_ERR_OUT_OF_RANGE
            );
            assert_eq!(n, 10);
            n = 0;
            assert_eq!(
                conc_queue_try_pop(q, ptr::null_mut(), 0, &mut n),
                CONC_ERR_OUT_OF_RANGE
            );
            assert_eq!(n, 10);
        }
        assert_eq!(pop(q), Ok(b"0123456789".to_vec()));
        close(q);
    }

    #[test]
    fn shutdown_semantics() {
        let _lock = shm_lock();
        let q = create(None, 4, 4);
        assert_eq!(push(q, b"a"), CONC_OK);
        // SAFETY: live handle.
        unsafe {
            assert_eq!(conc_queue_shutdown(q), CONC_OK);
            assert_eq!(conc_queue_shutdown(q), CONC_OK);
        }
        assert_eq!(push(q, b"b"), CONC_ERR_SHUTDOWN);
        assert_eq!(push(q, b"too long"), CONC_ERR_OUT_OF_RANGE);
        assert_eq!(pop(q), Ok(b"a".to_vec()));
        assert_eq!(pop(q), Err(CONC_ERR_SHUTDOWN));
        close(q);
    }

    #[test]
    fn timeouts_are_honoured() {
        let _lock = shm_lock();
        let q = create(None, 1, 4);
        let mut buf = [0u8; 4];
        let mut n = 0usize;
        let start = std::time::Instant::now();
        // SAFETY: valid buffers.
        let st = unsafe { conc_queue_pop_timeout(q, 30, buf.as_mut_ptr().cast(), 4, &mut n) };
        assert_eq!(st, CONC_ERR_TIMED_OUT);
        assert!(start.elapsed() >= std::time::Duration::from_millis(30));
        assert_eq!(push(q, b"x"), CONC_OK);
        // SAFETY: valid message.
        let st = unsafe { conc_queue_push_timeout(q, b"y".as_ptr().cast(), 1, 20) };
        assert_eq!(st, CONC_ERR_TIMED_OUT);
        close(q);
    }

    /// Runs `f` in a forked child that then dies with `_exit` (as if
    /// killed): whatever it holds stays held by a dead process.
    fn in_dying_child(f: impl FnOnce() -> bool) {
        // SAFETY: the child only touches atomics and memory, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let held = f();
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if held { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child could not take the mutex"
        );
    }

    #[test]
    fn a_producer_dying_mid_copy_leaves_no_message() {
        let _lock = shm_lock();
        let q = create(None, 4, 8);
        assert_eq!(push(q, b"first"), CONC_OK);
        let obj = handle::lookup(q).unwrap();
        in_dying_child(|| {
            // Lock, half-write the next slot, die before the commit.
            let held = obj.mutex().lock(Deadline::NEVER) == Ok(false);
            let tail = obj.ring().tail.load(Ordering::Relaxed);
            let (len, bytes) = obj.slot(tail);
            len.store(8, Ordering::Relaxed);
            // SAFETY: the slot holds 8 bytes.
            unsafe { ptr::write_bytes(bytes, b'!', 3) };
            held
        });
        // The kernel marked the dead holder's mutex: the next locker is
        // told (and the queue's own calls repair it the same way).
        assert_eq!(obj.mutex().lock(Deadline::after_ms(5000)).ok(), Some(true));
        obj.mutex().consistent().unwrap();
        obj.mutex().unlock().unwrap();
        in_dying_child(|| {
            let held = obj.mutex().lock(Deadline::NEVER) == Ok(false);
            let tail = obj.ring().tail.load(Ordering::Relaxed);
            obj.slot(tail).0.store(8, Ordering::Relaxed);
            held
        });
        // The next caller repairs the mutex; the half message is absent.
        assert_eq!(push(q, b"second"), CONC_OK);
        assert_eq!(pop(q), Ok(b"first".to_vec()));
        assert_eq!(pop(q), Ok(b"second".to_vec()));
        assert_eq!(pop(q), Err(CONC_ERR_BUSY));
        close(q);
    }

    #[test]
    fn a_producer_dying_after_the_commit_delivers_whole() {
        let _lock = shm_lock();
        let q = create(None, 4, 8);
        let obj = handle::lookup(q).unwrap();
        in_dying_child(|| {
            // Push fully, then die still holding the mutex.
            let held = obj.mutex().lock(Deadline::NEVER) == Ok(false);
            let r = obj.ring();
            let tail = r.tail.load(Ordering::Relaxed);
            let (len, bytes) = obj.slot(tail);
            len.store(5, Ordering::Relaxed);
            // SAFETY: the slot holds 8 bytes.
            unsafe { ptr::copy_nonoverlapping(b"whole".as_ptr(), bytes, 5) };
            r.tail.store(tail + 1, Ordering::Release);
            held
        });
        assert_eq!(pop(q), Ok(b"whole".to_vec()));
        assert_eq!(pop(q), Err(CONC_ERR_BUSY));
        close(q);
    }

    #[test]
    fn a_consumer_dying_before_the_commit_loses_nothing() {
        let _lock = shm_lock();
        let q = create(None, 4, 8);
        assert_eq!(push(q, b"keep"), CONC_OK);
        let obj = handle::lookup(q).unwrap();
        in_dying_child(|| {
            // Lock and read the first message, die before head + 1.
            let held = obj.mutex().lock(Deadline::NEVER) == Ok(false);
            let head = obj.ring().head.load(Ordering::Relaxed);
            let (len, _) = obj.slot(head);
            let _ = len.load(Ordering::Relaxed);
            held
        });
        assert_eq!(pop(q), Ok(b"keep".to_vec()));
        close(q);
    }

    #[test]
    fn handles_are_checked() {
        let _lock = shm_lock();
        let q = create(None, 1, 1);
        close(q);
        assert_eq!(push(q, b""), CONC_ERR_INVALID_STATE);
        assert_eq!(pop(q), Err(CONC_ERR_INVALID_STATE));
        // SAFETY: NULL and stale handles are refused before use.
        unsafe {
            assert_eq!(conc_queue_shutdown(q), CONC_ERR_INVALID_STATE);
            assert_eq!(conc_queue_close(q), CONC_ERR_INVALID_STATE);
            assert_eq!(conc_queue_len(q), 0);
            assert_eq!(
                conc_queue_shutdown(ptr::null_mut()),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(conc_queue_close(ptr::null_mut()), CONC_OK);
            let mut out = std::ptr::dangling_mut::<conc_queue>();
            let bad = CString::new("no/slash").unwrap();
            assert_eq!(
                conc_queue_create(&mut out, bad.as_ptr(), 1, 1),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert!(out.is_null());
        }
    }
}
