//! Shared lists of byte strings (`CONC_TYPE_BYTES`): Python's
//! `ShareableList` of `str`/`bytes`. Each element holds 0 to `item_size`
//! bytes and keeps its length. A reader never sees a torn element whatever
//! writers in other processes do, and a writer killed at any instant
//! (SIGKILL) leaves the element with its old or its new value and blocks no
//! reader and no writer.
//!
//! # Why not a sequence lock
//!
//! A seqlock's writer makes the counter odd, writes, and makes it even
//! again; readers retry while it is odd. A writer killed in between leaves
//! it odd for ever, and every reader spins for ever. So the element keeps
//! **two copies** of its value, and a version word whose low bit names the
//! current one. A writer fills the *other* copy, then publishes it with one
//! atomic store of the version; readers never wait for anyone, and a copy
//! that a dead writer half-filled is never current. Writers are serialised
//! by a **robust lock** (`conc_mutex`): a writer that dies holding it hands
//! it to the next writer as "owner died", which is harmless here because the
//! element is consistent at every instant (see below), so the next writer
//! marks the lock consistent and goes on.
//!
//! # Layout
//!
//! After the list header (`list.rs`; its 24 bytes, then the item size `S`
//! as a u64 at offset 24, padding to 64), element `i` starts at
//! `64 + i * stride`, where `W = ceil(S / 8)` and `stride` is
//! `64 + 8 + 2 * (8 + 8 W)` rounded up to a multiple of 64 (elements start
//! on their own cache line, so writers of different elements do not slow
//! each other down):
//!
//! | offset        | size | field                                             |
//! |---------------|------|---------------------------------------------------|
//! | 0             | 64   | the writer lock, a `conc_mutex` (zero: unlocked)  |
//! | 64            | 8    | `version`: copy `version & 1` is the current one   |
//! | 72            | 8    | copy 0: its length in bytes                       |
//! | 80            | 8 W  | copy 0: its bytes, in `W` words                   |
//! | 80 + 8 W      | 8    | copy 1: its length                                |
//! | 88 + 8 W      | 8 W  | copy 1: its bytes                                 |
//!
//! A new segment is zero-filled: version 0, copy 0 of length 0, the lock
//! unlocked, so every element starts empty. Every shared word is accessed
//! only through 64-bit atomics (the bytes too, a word at a time), so there
//! is no data race in the language's sense anywhere, whatever other
//! processes do; the argument below is about which values those atomics
//! can return.
//!
//! One lock per element, not one per list: writers of different elements
//! (the usual `ShareableList` pattern, each worker filling its own slots)
//! never wait for each other, and a writer killed while holding a lock
//! delays only the next writer of that one element, once. It costs 64
//! bytes per element.
//!
//! # The protocol
//!
//! Writer of `data` (`len <= S`, checked before anything is touched):
//! 1. lock the element's lock (if the previous holder died: `consistent`);
//! 2. `v = version.load(Acquire)`; the spare copy is `c' = (v + 1) & 1`;
//! 3. `fence(Release)`;
//! 4. store the length and the words of `data` into copy `c'` (Relaxed);
//! 5. `version.store(v + 1, Release)`: this single store publishes it;
//! 6. unlock.
//!
//! Reader into `buf`:
//! 1. `v1 = version.load(Acquire)`; the current copy is `c = v1 & 1`;
//! 2. load copy `c`'s length `n` (Relaxed), and when it fits `buf`, its
//!    words (Relaxed), copying the bytes out;
//! 3. `fence(Acquire)`; `v2 = version.load(Relaxed)`;
//! 4. if `v2 != v1` go back to 1; else the result is `n` bytes (or, when
//!    `n` did not fit, "needs `n` bytes").
//!
//! # Proof
//!
//! Call `W_k` the writer whose step 5 stores `k` (so it loaded `k - 1` in
//! step 2 and filled copy `k & 1`). Facts:
//!
//! - **(F1) The versions are stored in order.** Only the holder of the lock
//!   stores `version`, storing what it loaded plus 1, and the lock orders
//!   holders (a robust lock's hand-over from a dead holder too: the kernel
//!   marks the lock word, and the next holder's acquiring CAS reads it), so
//!   the modification order of `version` is 0, 1, 2, ... and `W_k` is
//!   unique. It never wraps (2^64 writes).
//! - **(F2) `W_k` writes only copy `k & 1`, and only while `version` is
//!   `k - 1`** (its store of `k` comes after its data stores).
//!
//! **No torn read.** Suppose a reader returns, so `v1 == v2 == v`, having
//! read copy `c = v & 1`. Each word it loaded was stored by some writer of
//! copy `c`, i.e. some `W_j` with `j ≡ v (mod 2)`:
//! - `j < v` is impossible: `W_v` stored its data before its Release store
//!   of `v`, which the reader's Acquire load read, so `W_v`'s stores happen
//!   before the reader's loads; by coherence a load cannot return a store
//!   that precedes (in modification order) one that happens before it, and
//!   `W_j`'s stores precede `W_v`'s (F1: `W_j` released the lock before
//!   `W_v` took it). (`v = 0`: nothing but the zero fill was ever stored in
//!   copy 0 before `W_2`, and the zero fill is the empty value.)
//! - `j > v`, so `j >= v + 2`, is impossible: `W_j` loaded `j - 1 >= v + 1`
//!   in its step 2, after the store of `j - 1` (which happens before it,
//!   through the lock), then made its Release fence, then stored the word
//!   the reader loaded. The reader's load of that word, followed by its
//!   Acquire fence, makes `W_j`'s fence synchronise with the reader's, so
//!   the store of `j - 1` happens before the reader's load `v2`, which by
//!   coherence returns `j - 1` or a later value: `v2 >= v + 1 != v1`.
//!   Contradiction.
//!
//! So every word, and the length, came from `W_v` (or the zero fill for
//! `v = 0`): the reader returns exactly the value `W_v` wrote, whole. The
//! length is checked against `S` before it is used (a damaged segment is
//! `CONC_ERR_IO`, never a read past the element).
//!
//! **Writer/writer.** Writers hold the lock from step 2 to step 5, so no
//! two write the same spare copy at once, and each publishes a copy that
//! it wrote entirely (length and every word of its data). Writers of
//! different elements share nothing.
//!
//! **A writer killed at any instant.** Its last completed step decides:
//! - before step 1 completes: it changed nothing;
//! - after 1 and before 5: `version` is still `v`; readers read copy
//!   `v & 1`, which it never touched (F2), so they see the old value; the
//!   half-written spare copy is not current. The next writer gets the lock
//!   with "owner died", marks it consistent, loads the same `v`, and
//!   rewrites the spare copy entirely before publishing it. A reader that
//!   had started on an older version and read some of the dead writer's
//!   stores retries, by the `j > v` case above (the dead writer's fence
//!   came before its stores, and its stores precede the next writer's in
//!   modification order, so a reader of `v + 1` never sees them).
//! - after 5: the new value is published whole; the lock is repaired by the
//!   next writer as above.
//! - after 6: nothing is left to do.
//!
//! Step 5 is one aligned 8-byte store: it happened or it did not, so the
//! element holds the old value or the new one, never a mix.
//!
//! **Nobody waits for a dead writer.** Readers take no lock: each attempt
//! reads at most `S` bytes, and fails only when a writer *completed* a
//! write during it (the version changed), so readers make progress as soon
//! as writers pause, and a dead writer never completes anything. A writer
//! waits only for the lock: a live holder keeps it for one copy of at most
//! `S` bytes, and a dead one's lock is handed over by the kernel's robust
//! list (the lock's own guarantee).

use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::{conc_list, CONC_TYPE_BYTES, HEADER_SIZE};
use crate::error::{conc_status, Error, Result, CONC_ERR_IO, CONC_ERR_OUT_OF_RANGE};
use crate::ffi::{guard, out_ref};
use crate::shm::{Segment, ShowName};
use crate::sync::futex::Deadline;
use crate::sync::mutex::conc_mutex;

/// Where the item size is kept, after the common 24-byte header.
const ITEM_SIZE_OFFSET: usize = HEADER_SIZE;
/// The elements of a bytes list start here.
const BYTES_HEADER: usize = 64;
/// The bytes reserved for each element's writer lock.
const LOCK_AREA: usize = 64;
const LINE: usize = 64;

const _: () = assert!(std::mem::size_of::<conc_mutex>() <= LOCK_AREA);
const _: () = assert!(std::mem::align_of::<conc_mutex>() <= 8);
const _: () = assert!(ITEM_SIZE_OFFSET + 8 <= BYTES_HEADER);

/// Words of 8 bytes holding `item_size` bytes.
fn words(item_size: usize) -> Option<usize> {
    Some(item_size.checked_add(7)? / 8)
}

/// The distance between elements, a multiple of 64.
fn stride(item_size: usize) -> Option<usize> {
    let copy = words(item_size)?.checked_mul(8)?.checked_add(8)?;
    let raw = copy.checked_mul(2)?.checked_add(LOCK_AREA + 8)?;
    Some(raw.checked_add(LINE - 1)? / LINE * LINE)
}

/// The segment size for `len` elements of up to `item_size` bytes, if it
/// fits in a `usize`.
pub(super) fn segment_size(len: usize, item_size: usize) -> Option<usize> {
    len.checked_mul(stride(item_size)?)?
        .checked_add(BYTES_HEADER)
}

fn item_size_word(segment: &Segment) -> &AtomicU64 {
    // SAFETY: called on segments of at least BYTES_HEADER bytes only
    // (create makes them larger; read_item_size checks the size before
    // calling this); the offset is 8-aligned in a page-aligned mapping
    // that lives as long as `segment`.
    unsafe { &*segment.as_ptr().add(ITEM_SIZE_OFFSET).cast::<AtomicU64>() }
}

/// Stores the item size of a new bytes list (before its magic is
/// published).
pub(super) fn write_item_size(segment: &Segment, item_size: usize) {
    item_size_word(segment).store(item_size as u64, Ordering::Relaxed);
}

/// The item size of a bytes list being opened (its magic already read
/// with Acquire), or why the segment is not one.
pub(super) fn read_item_size(segment: &Segment) -> std::result::Result<usize, String> {
    if segment.size() < BYTES_HEADER {
        return Err("too small for a byte-string list header".into());
    }
    match item_size_word(segment).load(Ordering::Relaxed) {
        0 => Err("an item size of 0".into()),
        n => usize::try_from(n).map_err(|_| format!("an item size of {n}")),
    }
}

/// One copy of an element's value: its length and its words.
struct Copy<'a> {
    len: &'a AtomicU64,
    words: &'a [AtomicU64],
}

/// One element of a bytes list, in the shared mapping.
struct Element<'a> {
    lock: &'a conc_mutex,
    version: &'a AtomicU64,
    copies: [Copy<'a>; 2],
    item_size: usize,
}

impl conc_list {
    /// Element `index` (checked by the caller) of a bytes list.
    fn element(&self, index: usize) -> Element<'_> {
        debug_assert!(self.ty == CONC_TYPE_BYTES && index < self.len);
        let w = self.item_size.div_ceil(8);
        // create and open checked that segment_size(len, item_size) fits
        // the mapping, so none of this overflows and every offset below is
        // inside it.
        let stride = stride(self.item_size).unwrap_or(0);
        // SAFETY: index < len, so the element's `stride` bytes lie inside
        // the mapping (see above), which lives as long as `self`; every
        // offset is 8-aligned in a page-aligned mapping; the fields are a
        // conc_mutex (all-zero valid, shared-memory safe by its contract)
        // and atomics, which other processes may access concurrently.
        unsafe {
            let base = self.segment.as_ptr().add(BYTES_HEADER + index * stride);
            let at = |off: usize| &*base.add(off).cast::<AtomicU64>();
            let words =
                |off: usize| std::slice::from_raw_parts(base.add(off).cast::<AtomicU64>(), w);
            let copy1 = LOCK_AREA + 8 + 8 + 8 * w;
            Element {
                lock: &*base.cast::<conc_mutex>(),
                version: at(LOCK_AREA),
                copies: [
                    Copy {
                        len: at(LOCK_AREA + 8),
                        words: words(LOCK_AREA + 16),
                    },
                    Copy {
                        len: at(copy1),
                        words: words(copy1 + 8),
                    },
                ],
                item_size: self.item_size,
            }
        }
    }
}

/// What a read found: the element's length, and whether its bytes were
/// copied out (they were iff the length fit the buffer).
struct Found {
    len: usize,
    copied: bool,
}

impl Element<'_> {
    /// Publishes `data` (at most `item_size` bytes, checked by the caller)
    /// as the element's new value: the writer of the protocol above.
    fn write(&self, data: &[u8]) -> Result<()> {
        debug_assert!(data.len() <= self.item_size);
        let owner_died = self.lock.lock(Deadline::NEVER)?;
        if owner_died {
            // The element is consistent whatever the dead writer did (see
            // the proof): nothing to repair but the lock itself.
            if let Err(err) = self.lock.consistent() {
                let _ = self.lock.unlock();
                return Err(err);
            }
        }
        let v = self.version.load(Ordering::Acquire);
        let spare = &self.copies[((v & 1) ^ 1) as usize];
        fence(Ordering::Release);
        spare.len.store(data.len() as u64, Ordering::Relaxed);
        for (word, chunk) in spare.words.iter().zip(data.chunks(8)) {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
        self.version.store(v.wrapping_add(1), Ordering::Release);
        self.lock.unlock()
    }

    /// Reads the current value into `buf` when it fits: the reader of the
    /// protocol above. Err only for a damaged segment (a length past the
    /// item size in a consistent snapshot).
    fn read(&self, buf: &mut [u8]) -> std::result::Result<Found, u64> {
        loop {
            let v1 = self.version.load(Ordering::Acquire);
            let copy = &self.copies[(v1 & 1) as usize];
            let len = copy.len.load(Ordering::Relaxed);
            let fits = len <= buf.len() as u64 && len <= self.item_size as u64;
            if fits {
                let len = len as usize;
                for (word, chunk) in copy.words.iter().zip(buf[..len].chunks_mut(8)) {
                    let bytes = word.load(Ordering::Relaxed).to_ne_bytes();
                    chunk.copy_from_slice(&bytes[..chunk.len()]);
                }
            }
            fence(Ordering::Acquire);
            if self.version.load(Ordering::Relaxed) != v1 {
                std::hint::spin_loop();
                continue;
            }
            if len > self.item_size as u64 {
                return Err(len);
            }
            return Ok(Found {
                len: len as usize,
                copied: fits,
            });
        }
    }
}

/// Creates a new shared list of `len` byte strings of 0 to `item_size`
/// bytes each, all empty, in a new segment named `name` (the rules and
/// behaviour of `conc_list_create`: NULL picks a random `psm_` name, mode
/// 0600, never an existing segment, no name left behind on failure).
/// Another process attaches with `conc_list_open(name)` alone, which gives
/// it the length, the type `CONC_TYPE_BYTES` and the item size.
///
/// Each element costs about `2 * item_size + 88` bytes, rounded up to a
/// multiple of 64 (two copies of the value, so that a writer killed in the
/// middle of a write never damages it, and a lock for its writers).
///
/// On success `*out` is the new handle, owned by the caller until
/// `conc_list_close`; the segment stays until `conc_list_unlink`. On
/// failure `*out` is NULL.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`out` NULL, bad name, `len` 0,
/// `item_size` 0), `CONC_ERR_ALREADY_EXISTS`, `CONC_ERR_RESOURCE_EXHAUSTED`
/// (no space, or a size no segment can hold), `CONC_ERR_PERMISSION_DENIED`,
/// `CONC_ERR_IO`.
///
/// # Safety
/// `out` must be NULL or valid for writes; `name` NULL or a NUL-terminated
/// string.
#[no_mangle]
pub unsafe extern "C" fn conc_list_create_bytes(
    out: *mut *mut conc_list,
    name: *const std::ffi::c_char,
    len: usize,
    item_size: usize,
) -> conc_status {
    const OP: &str = "conc_list_create_bytes";
    guard(OP, || {
        // SAFETY: out is NULL or valid for writes (caller contract).
        let out = unsafe { out_ref(out, OP, "out") }?;
        *out = std::ptr::null_mut();
        let name = if name.is_null() {
            None
        } else {
            // SAFETY: non-NULL and NUL-terminated (caller contract).
            Some(unsafe { std::ffi::CStr::from_ptr(name) })
        };
        let call = || crate::msg!("{OP}({}, {len}, {item_size})", ShowName(name));
        if len == 0 {
            return Err(Error::invalid(format_args!("{}: the length is 0", call())));
        }
        if item_size == 0 {
            return Err(Error::invalid(format_args!(
                "{}: the item size is 0",
                call()
            )));
        }
        *out = super::create_list(
            OP,
            name,
            CONC_TYPE_BYTES,
            len,
            item_size,
            format_args!(", {len}, {item_size}"),
        )?;
        Ok(())
    })
}

/// Stores the `n` bytes at `data` as element `index` of a `CONC_TYPE_BYTES`
/// list (any bytes, NUL included; `n` 0 makes it empty). Every reader, in
/// any process, sees the old value or the new one whole, never a mix; if
/// the calling process is killed during the call, the element keeps its
/// old value or has the new one, and other writers and readers go on.
///
/// Writers of the same element take turns (a lock per element, robust
/// against a writer that dies holding it); readers never wait for them.
/// The lock knows its holder by thread id, so processes in different PID
/// namespaces (e.g. containers sharing `/dev/shm`) must not write the same
/// list; reading it from anywhere is fine.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`list` NULL, `data` NULL with `n >
/// 0`, or a list that does not hold `CONC_TYPE_BYTES`),
/// `CONC_ERR_OUT_OF_RANGE` (`index >= conc_list_len(list)`, or `n >
/// conc_list_item_size(list)`: the element is unchanged),
/// `CONC_ERR_INVALID_STATE` (a closed handle), or what the element's lock
/// reports (`CONC_ERR_INVALID_STATE` when it was left unusable by a
/// program that wrote into the list's memory).
///
/// # Safety
/// `list` must be NULL or a live handle; `data` NULL or valid for reads of
/// `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn conc_list_set_bytes(
    list: *mut conc_list,
    index: usize,
    data: *const std::ffi::c_void,
    n: usize,
) -> conc_status {
    const OP: &str = "conc_list_set_bytes";
    guard(OP, || {
        let list = crate::handle::get(list, OP, "list")?;
        if n > 0 {
            crate::ffi::not_null(data, OP, "data")?;
        }
        list.check_element(OP, index, CONC_TYPE_BYTES)?;
        if n > list.item_size {
            return Err(Error::new(
                CONC_ERR_OUT_OF_RANGE,
                format_args!(
                    "{OP}({}, {index}): {n} bytes is longer than the item size {}",
                    ShowName(Some(list.segment.name())),
                    list.item_size
                ),
            ));
        }
        // SAFETY: NULL only when n is 0 (checked above), else valid for
        // `n` bytes (caller contract); n is at most item_size, so the
        // slice is a real one.
        let data = unsafe { crate::ffi::bytes(data.cast(), n, OP, "data") }?;
        list.element(index).write(data)
    })
}

/// Copies element `index` of a `CONC_TYPE_BYTES` list into `buf` and sets
/// `*n` to its length in bytes. The copy is whole and consistent: never a
/// mix of two values, whatever writers in other processes do at the same
/// time (the call retries, without waiting for any writer, when one
/// finishes a write while it copies). No NUL is added.
///
/// `buf` NULL with `buf_size` 0 is a size probe: `CONC_OK` with `*n` 0 for
/// an empty element, else `CONC_ERR_OUT_OF_RANGE` with `*n` set.
///
/// Errors: `CONC_ERR_OUT_OF_RANGE` (`index >= conc_list_len(list)`; or the
/// element is longer than `buf_size`: then `*n` is set to the size it
/// needs, one of the documented exceptions to "outputs are written only on
/// success"; call again with a buffer of `conc_list_item_size(list)` bytes
/// to never see this), `CONC_ERR_INVALID_ARGUMENT` (`list` or `n` NULL,
/// `buf` NULL with `buf_size > 0`, or a list that does not hold
/// `CONC_TYPE_BYTES`), `CONC_ERR_INVALID_STATE` (a closed handle),
/// `CONC_ERR_IO` (the element's recorded length exceeds the item size:
/// something other than conc wrote into the segment).
///
/// `buf` is left alone on every failure, except that when another process
/// makes the element longer than `buf_size` while this call is copying it,
/// the bytes of `buf` may have been overwritten before the call returns
/// `CONC_ERR_OUT_OF_RANGE`.
///
/// # Safety
/// `list` must be NULL or a live handle; `buf` NULL or valid for writes of
/// `buf_size` bytes; `n` NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn conc_list_get_bytes(
    list: *const conc_list,
    index: usize,
    buf: *mut std::ffi::c_void,
    buf_size: usize,
    n: *mut usize,
) -> conc_status {
    const OP: &str = "conc_list_get_bytes";
    guard(OP, || {
        let list = crate::handle::get(list, OP, "list")?;
        // SAFETY: NULL or valid for writes (caller contract).
        let n = unsafe { out_ref(n, OP, "n") }?;
        if buf_size > 0 {
            crate::ffi::not_null(buf, OP, "buf")?;
        }
        list.check_element(OP, index, CONC_TYPE_BYTES)?;
        // No element is longer than item_size, so only that much of `buf`
        // is ever used (whatever buf_size says, even SIZE_MAX).
        let usable = buf_size.min(list.item_size);
        let buf: &mut [u8] = if usable == 0 {
            &mut []
        } else {
            // SAFETY: non-NULL and valid for `buf_size >= usable` bytes
            // (caller contract); usable <= item_size, a size that fits in
            // a mapping, so below isize::MAX.
            unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), usable) }
        };
        let call = || crate::msg!("{OP}({}, {index})", ShowName(Some(list.segment.name())));
        match list.element(index).read(buf) {
            Ok(Found { len, copied: true }) => {
                *n = len;
                Ok(())
            }
            Ok(Found { len, copied: false }) => {
                *n = len;
                Err(Error::new(
                    CONC_ERR_OUT_OF_RANGE,
                    format_args!(
                        "{}: the element holds {len} bytes, more than buf_size {buf_size}",
                        call()
                    ),
                ))
            }
            Err(len) => Err(Error::new(
                CONC_ERR_IO,
                format_args!(
                    "{}: the element's length {len} exceeds the item size {}: the segment was damaged",
                    call(),
                    list.item_size
                ),
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use crate::error::*;
    use crate::shm::tests::{in_dev_shm, shm_lock, unique};
    use crate::shm::{conc_shm_buf, conc_shm_close, conc_shm_create, conc_shm_unlink_name};
    use std::ffi::{c_void, CStr};
    use std::ptr;

    fn create(name: Option<&CStr>, len: usize, item_size: usize) -> (conc_status, *mut conc_list) {
        let mut out = std::ptr::dangling_mut::<conc_list>();
        let name = name.map_or(ptr::null(), CStr::as_ptr);
        // SAFETY: out is valid; name is NULL or a C string.
        let st = unsafe { conc_list_create_bytes(&mut out, name, len, item_size) };
        (st, out)
    }

    fn set(list: *mut conc_list, index: usize, data: &[u8]) -> conc_status {
        // SAFETY: NULL or a live handle; data is valid for its length.
        unsafe { conc_list_set_bytes(list, index, data.as_ptr().cast(), data.len()) }
    }

    /// (status, n, the bytes read when OK).
    fn get(list: *const conc_list, index: usize, buf_size: usize) -> (conc_status, usize, Vec<u8>) {
        let mut buf = vec![0xAAu8; buf_size];
        let mut n = usize::MAX;
        // SAFETY: buf is valid for buf_size bytes, n for writes.
        let st =
            unsafe { conc_list_get_bytes(list, index, buf.as_mut_ptr().cast(), buf_size, &mut n) };
        buf.truncate(if st == CONC_OK { n } else { buf_size });
        (st, n, buf)
    }

    #[test]
    fn layout_sizes() {
        assert_eq!(words(1), Some(1));
        assert_eq!(words(8), Some(1));
        assert_eq!(words(9), Some(2));
        // 64 + 8 + 2 * (8 + 8) = 104 -> 128
        assert_eq!(stride(8), Some(128));
        // 64 + 8 + 2 * (8 + 64) = 216 -> 256
        assert_eq!(stride(64), Some(256));
        assert_eq!(super::segment_size(3, 64), Some(64 + 3 * 256));
        assert_eq!(stride(usize::MAX), None);
        assert_eq!(super::segment_size(usize::MAX, 8), None);
    }

    #[test]
    fn set_get_probe_and_lengths() {
        let _lock = shm_lock();
        let (st, a) = create(None, 3, 10);
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        // SAFETY: live handles and C strings.
        let name = unsafe { CStr::from_ptr(conc_list_name(a)) }.to_owned();
        let mut b = ptr::null_mut();
        // SAFETY: valid out pointer and name.
        assert_eq!(unsafe { conc_list_open(&mut b, name.as_ptr()) }, CONC_OK);
        // SAFETY: live handles.
        unsafe {
            assert_eq!(conc_list_type(b), CONC_TYPE_BYTES);
            assert_eq!(conc_list_len(b), 3);
            assert_eq!(conc_list_item_size(b), 10);
            assert_eq!(conc_list_item_size(a), 10);
        }
        // New elements are empty.
        assert_eq!(get(b, 2, 10), (CONC_OK, 0, vec![]));
        assert_eq!(set(a, 0, b"he\0llo"), CONC_OK);
        assert_eq!(get(b, 0, 10), (CONC_OK, 6, b"he\0llo".to_vec()));
        assert_eq!(get(b, 0, 6), (CONC_OK, 6, b"he\0llo".to_vec()));
        // Too small a buffer: OUT_OF_RANGE, *n the size needed, buf untouched.
        assert_eq!(get(b, 0, 5), (CONC_ERR_OUT_OF_RANGE, 6, vec![0xAA; 5]));
        assert!(last_error_message().contains("holds 6 bytes, more than buf_size 5"));
        // The size probe.
        let mut n = 99;
        // SAFETY: NULL buf with size 0 is the probe; n is valid.
        unsafe {
            assert_eq!(
                conc_list_get_bytes(b, 0, ptr::null_mut(), 0, &mut n),
                CONC_ERR_OUT_OF_RANGE
            );
            assert_eq!(n, 6);
            assert_eq!(
                conc_list_get_bytes(b, 1, ptr::null_mut(), 0, &mut n),
                CONC_OK
            );
            assert_eq!(n, 0);
        }
        // Exactly item_size; one more is refused and changes nothing.
        assert_eq!(set(a, 1, b"0123456789"), CONC_OK);
        assert_eq!(set(a, 1, b"0123456789A"), CONC_ERR_OUT_OF_RANGE);
        assert!(last_error_message().contains("11 bytes is longer than the item size 10"));
        assert_eq!(get(b, 1, 64), (CONC_OK, 10, b"0123456789".to_vec()));
        // Shorter again keeps only the new length; empty is allowed, with
        // data NULL too.
        assert_eq!(set(a, 1, b"xy"), CONC_OK);
        assert_eq!(get(b, 1, 64), (CONC_OK, 2, b"xy".to_vec()));
        // SAFETY: NULL data with n 0 is an empty value.
        assert_eq!(
            unsafe { conc_list_set_bytes(a, 1, ptr::null(), 0) },
            CONC_OK
        );
        assert_eq!(get(b, 1, 64), (CONC_OK, 0, vec![]));
        // Many writes flip the copies back and forth.
        for i in 0..100u8 {
            let v = vec![i; (i % 11) as usize];
            assert_eq!(set(b, 2, &v), CONC_OK);
            assert_eq!(get(a, 2, 10), (CONC_OK, v.len(), v.clone()));
        }
        // SAFETY: live handles.
        unsafe {
            assert_eq!(conc_list_unlink(a), CONC_OK);
            assert_eq!(conc_list_close(a), CONC_OK);
            assert_eq!(conc_list_close(b), CONC_OK);
        }
        assert!(!in_dev_shm(&name));
    }

    #[test]
    fn errors() {
        let _lock = shm_lock();
        let name = unique("lbytes");
        for (len, item) in [(0, 8), (8, 0), (0, 0)] {
            let (st, p) = create(Some(&name), len, item);
            assert_eq!((st, p.is_null()), (CONC_ERR_INVALID_ARGUMENT, true));
        }
        assert!(last_error_message().contains("the length is 0"));
        let (st, _) = create(Some(&name), 1, 0);
        assert_eq!(st, CONC_ERR_INVALID_ARGUMENT);
        assert!(last_error_message().contains("the item size is 0"));
        let (st, p) = create(Some(&name), 2, usize::MAX);
        assert_eq!((st, p.is_null()), (CONC_ERR_RESOURCE_EXHAUSTED, true));
        let (st, p) = create(Some(&name), usize::MAX / 64, 8);
        assert_eq!((st, p.is_null()), (CONC_ERR_RESOURCE_EXHAUSTED, true));
        assert!(!in_dev_shm(&name));
        // SAFETY: NULL out is refused.
        unsafe {
            assert_eq!(
                conc_list_create_bytes(ptr::null_mut(), ptr::null(), 1, 1),
                CONC_ERR_INVALID_ARGUMENT
            );
        }

        let (st, a) = create(None, 2, 4);
        assert_eq!(st, CONC_OK);
        let mut num = ptr::null_mut();
        // SAFETY: valid pointers, live handles; NULLs are refused.
        unsafe {
            assert_eq!(
                conc_list_create(&mut num, ptr::null(), RawType(0), 2),
                CONC_OK
            );
            let mut v = 3;
            let mut d = 0.0;
            let mut n = 7usize;
            let mut buf = [0u8; 8];
            assert_eq!(conc_list_get_i64(a, 0, &mut v), CONC_ERR_INVALID_ARGUMENT);
            assert!(
                last_error_message().contains("holds CONC_TYPE_BYTES values, not CONC_TYPE_I64")
            );
            assert_eq!(conc_list_set_i64(a, 0, 1), CONC_ERR_INVALID_ARGUMENT);
            assert_eq!(
                conc_list_add_i64(a, 0, 1, &mut v),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                conc_list_compare_exchange_i64(a, 0, 0, 1, &mut v),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(conc_list_get_f64(a, 0, &mut d), CONC_ERR_INVALID_ARGUMENT);
            assert_eq!(conc_list_set_f64(a, 0, 1.0), CONC_ERR_INVALID_ARGUMENT);
            assert_eq!(v, 3);
            assert_eq!(set(num, 0, b"x"), CONC_ERR_INVALID_ARGUMENT);
            assert!(
                last_error_message().contains("holds CONC_TYPE_I64 values, not CONC_TYPE_BYTES")
            );
            assert_eq!(get(num, 0, 8).0, CONC_ERR_INVALID_ARGUMENT);
            assert_eq!(conc_list_item_size(num), 8);
            assert_eq!(conc_list_item_size(ptr::null()), 0);
            // Lengths past any slice: refused, or clamped, before use.
            assert_eq!(
                conc_list_set_bytes(a, 0, b"x".as_ptr().cast(), usize::MAX),
                CONC_ERR_OUT_OF_RANGE
            );
            assert_eq!(set(a, 0, b"abc"), CONC_OK);
            assert_eq!(
                conc_list_get_bytes(a, 0, buf.as_mut_ptr().cast(), usize::MAX, &mut n),
                CONC_OK
            );
            assert_eq!((n, &buf[..3]), (3, &b"abc"[..]));
            n = 7;
            // Index past the end.
            assert_eq!(set(a, 2, b"x"), CONC_ERR_OUT_OF_RANGE);
            assert_eq!(
                get(a, 2, 8),
                (CONC_ERR_OUT_OF_RANGE, usize::MAX, vec![0xAA; 8])
            );
            assert_eq!(get(a, usize::MAX, 8).0, CONC_ERR_OUT_OF_RANGE);
            // NULL arguments.
            assert_eq!(set(ptr::null_mut(), 0, b"x"), CONC_ERR_INVALID_ARGUMENT);
            assert_eq!(get(ptr::null(), 0, 8).0, CONC_ERR_INVALID_ARGUMENT);
            assert_eq!(
                conc_list_set_bytes(a, 0, ptr::null(), 1),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert!(last_error_message().contains("argument `data` is NULL"));
            assert_eq!(
                conc_list_get_bytes(a, 0, ptr::null_mut(), 4, &mut n),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert!(last_error_message().contains("argument `buf` is NULL"));
            assert_eq!(
                conc_list_get_bytes(a, 0, buf.as_mut_ptr().cast::<c_void>(), 8, ptr::null_mut()),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(n, 7);
            // Closed handles.
            assert_eq!(conc_list_unlink(a), CONC_OK);
            assert_eq!(conc_list_unlink(num), CONC_OK);
            assert_eq!(conc_list_close(a), CONC_OK);
            assert_eq!(conc_list_close(num), CONC_OK);
            assert_eq!(set(a, 0, b"x"), CONC_ERR_INVALID_STATE);
            assert_eq!(get(a, 0, 8).0, CONC_ERR_INVALID_STATE);
            assert_eq!(conc_list_item_size(a), 0);
        }
    }

    /// A plain segment with a bytes-list header of `item_size` and `len`.
    fn forged(tag: &str, size: usize, len: u64, item_size: u64) -> (conc_status, String) {
        let name = unique(tag);
        let mut shm = ptr::null_mut();
        let mut list = std::ptr::dangling_mut::<conc_list>();
        // SAFETY: valid pointers; the header fits in `size` >= 32 bytes.
        unsafe {
            assert_eq!(conc_shm_create(&mut shm, name.as_ptr(), size), CONC_OK);
            let p = conc_shm_buf(shm);
            p.cast::<u64>().write(MAGIC);
            p.add(8).cast::<u32>().write(1);
            p.add(12).cast::<u32>().write(2);
            p.add(16).cast::<u64>().write(len);
            p.add(24).cast::<u64>().write(item_size);
            let st = conc_list_open(&mut list, name.as_ptr());
            let msg = last_error_message();
            if st == CONC_OK {
                assert_eq!(conc_list_item_size(list), item_size as usize);
                assert_eq!(conc_list_close(list), CONC_OK);
            } else {
                assert!(list.is_null());
            }
            assert_eq!(conc_shm_close(shm), CONC_OK);
            assert_eq!(conc_shm_unlink_name(name.as_ptr()), CONC_OK);
            (st, msg)
        }
    }

    #[test]
    fn forged_headers() {
        let _lock = shm_lock();
        let (st, msg) = forged("fb_small", 32, 1, 8);
        assert_eq!(st, CONC_ERR_INVALID_ARGUMENT);
        assert!(
            msg.contains("too small for a byte-string list header"),
            "{msg}"
        );
        let (st, msg) = forged("fb_zero", 4096, 1, 0);
        assert_eq!(st, CONC_ERR_INVALID_ARGUMENT);
        assert!(msg.contains("an item size of 0"), "{msg}");
        let (st, _) = forged("fb_long", 64 + 2 * 128 - 1, 2, 8);
        assert_eq!(st, CONC_ERR_INVALID_ARGUMENT);
        let (st, _) = forged("fb_huge", 4096, 1, u64::MAX);
        assert_eq!(st, CONC_ERR_INVALID_ARGUMENT);
        let (st, msg) = forged("fb_fit", 64 + 2 * 128, 2, 8);
        assert_eq!(st, CONC_OK, "{msg}");
    }

    /// A damaged length (written by something other than conc) is
    /// CONC_ERR_IO, never a read past the element.
    #[test]
    fn damaged_length_is_io() {
        let _lock = shm_lock();
        let (st, a) = create(None, 1, 8);
        assert_eq!(st, CONC_OK);
        // SAFETY: live handle; element 0's copy 0 length is at 64 + 72.
        unsafe {
            let l = crate::handle::lookup(a).unwrap();
            let len = &*l
                .segment
                .as_ptr()
                .add(BYTES_HEADER + LOCK_AREA + 8)
                .cast::<AtomicU64>();
            len.store(9, Ordering::Relaxed);
        }
        let (st, _, _) = get(a, 0, 64);
        assert_eq!(st, CONC_ERR_IO);
        assert!(last_error_message().contains("exceeds the item size 8"));
        // A write repairs it (it fills the other copy).
        assert_eq!(set(a, 0, b"ok"), CONC_OK);
        assert_eq!(get(a, 0, 64), (CONC_OK, 2, b"ok".to_vec()));
        // SAFETY: live handle.
        unsafe {
            assert_eq!(conc_list_unlink(a), CONC_OK);
            assert_eq!(conc_list_close(a), CONC_OK);
        }
    }

    /// Two writer threads store two patterns of different lengths; readers
    /// only ever see one of them whole (or the empty start).
    #[test]
    fn no_torn_reads_between_threads() {
        let _lock = shm_lock();
        const ITEM: usize = 200;
        let (st, a) = create(None, 2, ITEM);
        assert_eq!(st, CONC_OK);
        let h = a as usize;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pa = vec![b'a'; ITEM];
        let pb = vec![b'B'; 37];
        let writers: Vec<_> = [pa.clone(), pb.clone()]
            .into_iter()
            .map(|p| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        assert_eq!(set(h as *mut conc_list, 1, &p), CONC_OK);
                    }
                })
            })
            .collect();
        for _ in 0..20_000 {
            let (st, _, v) = get(h as *const conc_list, 1, ITEM);
            assert_eq!(st, CONC_OK);
            assert!(v.is_empty() || v == pa || v == pb, "torn: {v:?}");
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        // SAFETY: live handle.
        unsafe {
            assert_eq!(conc_list_unlink(a), CONC_OK);
            assert_eq!(conc_list_close(a), CONC_OK);
        }
    }

    /// A writer that stopped half-way (as if killed) before publishing:
    /// readers see the old value, and the next writer publishes a whole one.
    #[test]
    fn half_written_spare_copy_is_never_seen() {
        let _lock = shm_lock();
        let (st, a) = create(None, 1, 16);
        assert_eq!(st, CONC_OK);
        assert_eq!(set(a, 0, b"old value"), CONC_OK);
        let l = crate::handle::lookup(a).unwrap();
        let e = l.element(0);
        let v = e.version.load(Ordering::Relaxed);
        let spare = &e.copies[((v + 1) & 1) as usize];
        spare.len.store(16, Ordering::Relaxed);
        spare.words[0].store(u64::MAX, Ordering::Relaxed);
        assert_eq!(get(a, 0, 16), (CONC_OK, 9, b"old value".to_vec()));
        assert_eq!(set(a, 0, b"new"), CONC_OK);
        assert_eq!(get(a, 0, 16), (CONC_OK, 3, b"new".to_vec()));
        // SAFETY: live handle.
        unsafe {
            assert_eq!(conc_list_unlink(a), CONC_OK);
            assert_eq!(conc_list_close(a), CONC_OK);
        }
    }
}
