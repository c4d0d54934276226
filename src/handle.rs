//! Generational handles: how every opaque object conc hands to C
//! (`conc_mmap *`, `conc_shm *`, `conc_list *`, `conc_pool *`,
//! `conc_queue *`) is named, checked and released.
//!
//! # Design
//!
//! The pointer C holds is not an address. It encodes a slot index and that
//! slot's generation:
//!
//! ```text
//!   bits 63..28: generation (never 0)   bits 27..4: slot index + 1   bits 3..0: 0
//! ```
//!
//! The slots live in a table that only grows and never moves, so a lookup
//! needs no lock. The first [`FLAT`] slots are one static array (128 KiB of
//! zero pages, in `.bss`, touched only as slots are used): a handle's slot
//! address is the array's address plus its index, with no load before the
//! slot's own. Programs with more open objects continue in segments:
//! segment `k` holds `64 << k` slots and is allocated (zeroed, fallibly)
//! the first time it is needed, then never freed. A slot is 32 bytes,
//! `tag`, `ptr` and `aux`:
//!
//! ```text
//!   live: tag = the handle | its kind (1..=5, in bits 3..0)   ptr = the boxed object
//!   free: tag = the next generation << 28 (index bits 0)      ptr = next free index + 1
//! ```
//!
//! `aux` is one word of the object's own state kept beside the tag, for
//! state a hot path needs at once: a map's cursor. There it is one load
//! from the slot, not a load of the object's address and then another
//! (the readline loop measured the second load at ~0.05-0.1 of a bare
//! `memchr` loop's time). Objects without such state leave it unused.
//!
//! Free slots are reused lowest-first from a free list, so a program keeps
//! to the static array unless it holds more than [`FLAT`] objects at once.
//!
//! Why a static first tier: a lookup sits on the critical path of every
//! call. With segments only, the slot's address needed a bit scan and a
//! load of the segment pointer before the slot's load, and the readline
//! loop measured ~0.2 of a bare `memchr` loop's time slower for it.
//!
//! - **Lookup** ([`get`], [`lookup`]) refuses a handle with low bits set,
//!   masks its index bits out (in place they are `(index + 1) << 4`, so the
//!   static array's slot is one shift and add away), loads the slot's `tag`
//!   (acquire) and compares it with the handle or-ed with the kind
//!   expected: one load and one compare on the hot path, no lock, no
//!   read-modify-write. With the low bits 0, `h | kind == tag` holds only
//!   for the live handle of that kind: a free slot's tag has kind bits 0; a
//!   live tag's generation is never 0 and its index bits are its own
//!   slot's. So a closed object (its generation has moved on), a pointer
//!   conc never made and an object of another kind are all refused without
//!   touching memory the handle names. Publishing stores `ptr` before `tag`
//!   (release), so a matching `tag` guarantees the matching `ptr`.
//! - **Release** takes the slot under the table's one mutex, bumps its
//!   generation and marks it free, so every copy of the old handle is
//!   refused from then on, even after the slot is reused by a later open:
//!   the new object has another generation. Generations are 36 bits; a
//!   slot would have to be reused 2^36 times for a stale handle to match
//!   again.
//! - Free slots form an intrusive list threaded through `ptr`, so neither
//!   publishing nor releasing allocates (beyond a new segment, which fails
//!   with `CONC_ERR_RESOURCE_EXHAUSTED` rather than aborting).
//!
//! Why not the 0.1 live-object set (a `BTreeMap` of addresses)? It took a
//! global lock on every call, allocated, and could not tell a stale
//! pointer from a new object that `malloc` happened to place at the same
//! address. Why not reference counts? They would put two atomic
//! read-modify-writes on every call (the readline loop's budget is a few
//! nanoseconds), to protect only against closing an object while another
//! thread still uses it, which, like `close(fd)` under a concurrent
//! `read(fd)`, is the program's bug: the header says so.

use std::alloc::{self, Layout};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result, CONC_ERR_INVALID_STATE, CONC_ERR_RESOURCE_EXHAUSTED};
use crate::ffi::not_null;

/// The kinds of object that go through handles. The value is stored in
/// each live slot; 0 means free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Mmap = 1,
    Shm = 2,
    List = 3,
    Pool = 4,
    Queue = 5,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Mmap => "conc_mmap",
            Kind::Shm => "conc_shm",
            Kind::List => "conc_list",
            Kind::Pool => "conc_pool",
            Kind::Queue => "conc_queue",
        }
    }
}

/// A type that C holds through a handle.
pub trait Object: Send + Sync + 'static {
    const KIND: Kind;
}

const LOW_BITS: u32 = 4;
const INDEX_BITS: u32 = 24;
const GEN_SHIFT: u32 = LOW_BITS + INDEX_BITS;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const GEN_MASK: u64 = (1 << (64 - GEN_SHIFT)) - 1;
/// Slots `0..FLAT` are the static array [`FLAT_SLOTS`].
const FLAT: usize = 4096;
/// Beyond it, segment `k` holds `FIRST << k` slots.
const FIRST: usize = 64;
const SEGMENTS: usize = 17;
/// Slot indices go up to `FLAT + FIRST * (2^SEGMENTS - 1) - 1`, below
/// `INDEX_MASK`.
const CAPACITY: usize = FLAT + FIRST * ((1 << SEGMENTS) - 1);
const _: () = assert!(CAPACITY as u64 <= INDEX_MASK);
const _: () = assert!(usize::BITS == 64, "handles encode 64-bit values");

#[repr(C, align(32))]
struct Slot {
    /// Live: the handle or-ed with its kind. Free: the next generation << 28.
    tag: AtomicU64,
    /// The object while live; the next free index + 1 (0: none) while free.
    ptr: AtomicPtr<()>,
    /// The object's hot word while live (see [`publish_with_aux`]).
    aux: AtomicPtr<u8>,
}

static FLAT_SLOTS: [Slot; FLAT] = [const {
    Slot {
        tag: AtomicU64::new(0),
        ptr: AtomicPtr::new(ptr::null_mut()),
        aux: AtomicPtr::new(ptr::null_mut()),
    }
}; FLAT];

static SEGMENT_TABLE: [AtomicPtr<Slot>; SEGMENTS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; SEGMENTS];

/// The allocator's state, under [`TABLE_LOCK`].
struct Free {
    /// Head of the free list: index + 1, 0 when empty.
    head: usize,
    /// Slots below this have been handed out at least once.
    used: usize,
}

static TABLE_LOCK: Mutex<Free> = Mutex::new(Free { head: 0, used: 0 });

fn table() -> MutexGuard<'static, Free> {
    TABLE_LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}
/// Live objects, for tests and diagnostics.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Locks the handle table. Fork handling holds it across `fork` so that
/// a child never inherits it locked.
pub fn lock_table() -> MutexGuard<'static, impl Sized> {
    table()
}

/// The segment and offset of slot `index` (at least [`FLAT`]).
fn locate(index: usize) -> (usize, usize) {
    let j = index - FLAT + FIRST;
    let k = (usize::BITS - 1 - j.leading_zeros()) as usize - FIRST.trailing_zeros() as usize;
    (k, j - (FIRST << k))
}

/// The slot `index`, if it exists.
fn slot(index: usize) -> Option<&'static Slot> {
    if index < FLAT {
        return Some(&FLAT_SLOTS[index]);
    }
    segment_slot(index)
}

/// The slot a handle names, if it exists and the handle's low bits are 0:
/// the hot half of every lookup.
#[inline(always)]
fn slot_of(handle: usize) -> Option<&'static Slot> {
    if handle & ((1 << LOW_BITS) - 1) != 0 {
        return None;
    }
    // The index bits, kept in place, are (index + 1) << LOW_BITS; an index
    // field of 0 wraps to a huge offset and goes the slow way.
    let offset = (handle & ((INDEX_MASK as usize) << LOW_BITS)).wrapping_sub(1 << LOW_BITS);
    if offset < FLAT << LOW_BITS {
        return Some(&FLAT_SLOTS[offset >> LOW_BITS]);
    }
    let (index, _) = decode(handle)?;
    segment_slot(index)
}

/// The tag of a live slot holding the object behind `handle` (low bits 0),
/// of kind `kind`.
#[inline(always)]
fn live_tag(handle: usize, kind: Kind) -> u64 {
    // Every kind fits in the low bits (Queue is the largest).
    const _: () = assert!((Kind::Queue as u64) < 1 << LOW_BITS);
    handle as u64 | kind as u64
}

/// The slot `index` beyond the static array, if its segment exists.
#[cold]
#[inline(never)]
fn segment_slot(index: usize) -> Option<&'static Slot> {
    if index >= CAPACITY {
        return None;
    }
    let (k, off) = locate(index);
    let seg = SEGMENT_TABLE[k].load(Ordering::Acquire);
    if seg.is_null() {
        return None;
    }
    // SAFETY: segment k holds FIRST << k slots, off is below that, and
    // segments are never freed.
    Some(unsafe { &*seg.add(off) })
}

/// The slot `index`, allocating its segment if needed (under the lock).
fn slot_or_grow(index: usize) -> Result<&'static Slot> {
    if let Some(s) = slot(index) {
        return Ok(s);
    }
    if index >= CAPACITY {
        return Err(Error::new(
            CONC_ERR_RESOURCE_EXHAUSTED,
            "too many open conc objects",
        ));
    }
    let (k, off) = locate(index);
    let layout = Layout::array::<Slot>(FIRST << k)
        .map_err(|_| Error::new(CONC_ERR_RESOURCE_EXHAUSTED, "too many open conc objects"))?;
    // SAFETY: the layout has a non-zero size; all-zero bytes are a valid
    // Slot (two atomics holding 0: free, generation 0).
    let seg = unsafe { alloc::alloc_zeroed(layout) }.cast::<Slot>();
    if seg.is_null() {
        return Err(Error::new(
            CONC_ERR_RESOURCE_EXHAUSTED,
            "out of memory for conc's handle table",
        ));
    }
    SEGMENT_TABLE[k].store(seg, Ordering::Release);
    // SAFETY: as in `slot`.
    Ok(unsafe { &*seg.add(off) })
}

fn encode(index: usize, generation: u64) -> usize {
    ((generation << GEN_SHIFT) | (((index as u64) + 1) << LOW_BITS)) as usize
}

/// Splits a handle into (index, generation), or None if it cannot be one.
fn decode(handle: usize) -> Option<(usize, u64)> {
    let h = handle as u64;
    if h & ((1 << LOW_BITS) - 1) != 0 {
        return None;
    }
    let index = (h >> LOW_BITS) & INDEX_MASK;
    let generation = h >> GEN_SHIFT;
    if index == 0 || generation == 0 {
        return None;
    }
    Some((index as usize - 1, generation))
}

/// Moves `value` to the heap without aborting when memory is short.
pub fn try_box<T>(value: T) -> Result<Box<T>> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(Box::new(value));
    }
    // SAFETY: non-zero size.
    let p = unsafe { alloc::alloc(layout) }.cast::<T>();
    if p.is_null() {
        return Err(Error::new(CONC_ERR_RESOURCE_EXHAUSTED, "out of memory"));
    }
    // SAFETY: p is a fresh allocation for one T, which Box then owns with
    // the global allocator and the same layout.
    unsafe {
        p.write(value);
        Ok(Box::from_raw(p))
    }
}

/// Hands `object` to C as a handle that conc owns until [`release`].
/// Fails with `CONC_ERR_RESOURCE_EXHAUSTED` (and drops `object`) when
/// memory is short.
pub fn publish<T: Object>(object: T) -> Result<*mut T> {
    publish_with_aux(object, ptr::null_mut())
}

/// [`publish`], with the slot's hot word (see [`lookup_aux`]) set to
/// `aux`.
pub fn publish_with_aux<T: Object>(object: T, aux: *mut u8) -> Result<*mut T> {
    let boxed = try_box(object)?;
    // Before the table's lock is first used: every fork() takes it.
    crate::fork::ensure_registered();
    let mut free = table();
    let index = if free.head != 0 {
        free.head - 1
    } else {
        free.used
    };
    let s = slot_or_grow(index)?;
    if free.head != 0 {
        free.head = s.ptr.load(Ordering::Relaxed) as usize;
    } else {
        free.used += 1;
    }
    // A free slot's tag is its next generation << GEN_SHIFT; a slot never
    // used is 0.
    let mut generation = s.tag.load(Ordering::Relaxed) >> GEN_SHIFT;
    if generation == 0 {
        generation = 1;
    }
    let handle = encode(index, generation);
    s.aux.store(aux, Ordering::Relaxed);
    s.ptr.store(Box::into_raw(boxed).cast(), Ordering::Relaxed);
    s.tag.store(live_tag(handle, T::KIND), Ordering::Release);
    LIVE.fetch_add(1, Ordering::Relaxed);
    Ok(handle as *mut T)
}

fn refuse<T: Object>(op: &str, arg: &str) -> Error {
    Error::new(
        CONC_ERR_INVALID_STATE,
        format_args!(
            "{op}: `{arg}` is not an open {} (closed already, or never made by conc)",
            T::KIND.name()
        ),
    )
}

/// The object behind a live handle of kind `T`, or None (NULL, closed,
/// forged, another kind). For accessors, which return NULL, 0 or `""`.
///
/// The reference is valid until the handle is released: closing an object
/// while another thread uses it is the program's bug, as with `close(fd)`.
#[inline]
pub fn lookup<'a, T: Object>(handle: *const T) -> Option<&'a T> {
    lookup_aux(handle).map(|(object, _)| object)
}

/// [`lookup`], with the handle's hot word: set by [`publish_with_aux`],
/// then the object's to use (with relaxed loads and stores) while the
/// handle is live. Once the handle is released the word belongs to the
/// slot's next object: never keep the reference past the call.
#[inline]
pub fn lookup_aux<'a, T: Object>(handle: *const T) -> Option<(&'a T, &'a AtomicPtr<u8>)> {
    let s = slot_of(handle as usize)?;
    if s.tag.load(Ordering::Acquire) != live_tag(handle as usize, T::KIND) {
        return None;
    }
    let p = s.ptr.load(Ordering::Relaxed).cast::<T>();
    // SAFETY: the tag matched, so `p` is the live object published under
    // this generation (stored before the tag, which we loaded with acquire).
    Some((unsafe { &*p }, &s.aux))
}

/// [`get`], with the handle's hot word (see [`lookup_aux`]).
#[inline]
pub fn get_aux<'a, T: Object>(
    handle: *const T,
    op: &str,
    arg: &str,
) -> Result<(&'a T, &'a AtomicPtr<u8>)> {
    not_null(handle, op, arg)?;
    lookup_aux(handle).ok_or_else(|| refuse::<T>(op, arg))
}

/// The object behind a handle of kind `T`: NULL is
/// `CONC_ERR_INVALID_ARGUMENT` naming `arg`; a closed, forged or
/// other-kind handle `CONC_ERR_INVALID_STATE`.
#[inline]
pub fn get<'a, T: Object>(handle: *const T, op: &str, arg: &str) -> Result<&'a T> {
    not_null(handle, op, arg)?;
    lookup(handle).ok_or_else(|| refuse::<T>(op, arg))
}

/// Takes back ownership of a live handle's object, for its close
/// function, and retires the handle: every copy of it is refused from now
/// on. NULL: `CONC_ERR_INVALID_ARGUMENT`; not a live `T`:
/// `CONC_ERR_INVALID_STATE`, nothing changed.
pub fn release<T: Object>(handle: *mut T, op: &str, arg: &str) -> Result<Box<T>> {
    not_null(handle, op, arg)?;
    let (index, generation) = decode(handle as usize).ok_or_else(|| refuse::<T>(op, arg))?;
    let mut free = table();
    let s = slot(index).ok_or_else(|| refuse::<T>(op, arg))?;
    if s.tag.load(Ordering::Relaxed) != live_tag(handle as usize, T::KIND) {
        return Err(refuse::<T>(op, arg));
    }
    let p = s.ptr.load(Ordering::Relaxed).cast::<T>();
    let mut next = (generation + 1) & GEN_MASK;
    if next == 0 {
        next = 1;
    }
    s.tag.store(next << GEN_SHIFT, Ordering::Release);
    s.ptr.store(free.head as *mut (), Ordering::Relaxed);
    free.head = index + 1;
    drop(free);
    LIVE.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: the tag matched under the lock, so `p` came from
    // Box::into_raw in publish::<T> and no other release can take it now.
    Ok(unsafe { Box::from_raw(p) })
}

/// How many handles are live (for tests).
pub fn live_count() -> usize {
    LIVE.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct A(u32);
    impl Object for A {
        const KIND: Kind = Kind::Mmap;
    }
    #[derive(Debug)]
    struct B(#[allow(dead_code)] u64);
    impl Object for B {
        const KIND: Kind = Kind::Shm;
    }

    #[test]
    fn locate_covers_segments() {
        assert_eq!(locate(FLAT), (0, 0));
        assert_eq!(locate(FLAT + 63), (0, 63));
        assert_eq!(locate(FLAT + 64), (1, 0));
        assert_eq!(locate(FLAT + 191), (1, 127));
        assert_eq!(locate(FLAT + 192), (2, 0));
        assert_eq!(
            locate(CAPACITY - 1),
            (SEGMENTS - 1, (FIRST << (SEGMENTS - 1)) - 1)
        );
    }

    #[test]
    fn stale_handle_never_reaches_new_object() {
        let h = publish(A(1)).unwrap();
        assert_eq!(get(h, "op", "a").unwrap().0, 1);
        assert_eq!(release(h, "op", "a").unwrap().0, 1);
        // The slot is reused at once (free-list head) by the next publish.
        let h2 = publish(A(2)).unwrap();
        assert_ne!(h, h2);
        assert!(lookup(h).is_none());
        assert_eq!(
            get(h, "op", "a").unwrap_err().status,
            CONC_ERR_INVALID_STATE
        );
        assert_eq!(
            release(h, "op", "a").unwrap_err().status,
            CONC_ERR_INVALID_STATE
        );
        assert_eq!(get(h2, "op", "a").unwrap().0, 2);
        release(h2, "op", "a").unwrap();
    }

    #[test]
    fn kind_null_and_forged_are_refused() {
        let h = publish(A(3)).unwrap();
        let e = get(h.cast::<B>().cast_const(), "conc_x", "x").unwrap_err();
        assert_eq!(e.status, CONC_ERR_INVALID_STATE);
        assert!(e.message.contains("not an open conc_shm"), "{}", e.message);
        let e = get::<A>(ptr::null(), "conc_x", "x").unwrap_err();
        assert_eq!(e.status, crate::error::CONC_ERR_INVALID_ARGUMENT);
        for forged in [
            1usize,
            0x10,
            0xdead_beef,
            usize::MAX,
            h as usize + 1,
            h as usize ^ (1 << 40),
        ] {
            assert!(lookup(forged as *const A).is_none(), "{forged:#x}");
        }
        // Low bits set never reach the slot, whatever kind is asked for:
        // `h | x` must not pass as the object, nor as one of another kind.
        for x in 1..16usize {
            assert!(lookup((h as usize | x) as *const A).is_none(), "{x}");
            assert!(lookup((h as usize | x) as *const B).is_none(), "{x}");
        }
        // Neither does the index of a slot past the table.
        assert!(lookup(encode(CAPACITY, 1) as *const A).is_none());
        assert_eq!(release(h, "op", "a").unwrap().0, 3);
    }

    #[test]
    fn many_handles_grow_the_table() {
        // Past the static array, into the first segments.
        let n = FLAT as u32 + 1000;
        let hs: Vec<_> = (0..n).map(|i| publish(A(i)).unwrap()).collect();
        for (i, &h) in hs.iter().enumerate() {
            assert_eq!(get(h, "op", "a").unwrap().0, i as u32);
        }
        for h in hs {
            release(h, "op", "a").unwrap();
        }
    }
}
