//! Shared lists: a fixed-length typed list in a named shared memory
//! segment, the counterpart of Python's `ShareableList`. Another process
//! attaches by name alone: the type and length are in the segment.
//!
//! Layout of the segment (native byte order; every process on one machine
//! shares it):
//!
//! | offset | size | field                                   |
//! |--------|------|-----------------------------------------|
//! | 0      | 8    | magic, `"conclst\0"`, stored last       |
//! | 8      | 4    | version, 1                              |
//! | 12     | 4    | type, a `conc_type` value               |
//! | 16     | 8    | length, in elements                     |
//! | 24     | 8·n  | the elements, 8 bytes each              |
//!
//! (`CONC_TYPE_BYTES` lists keep this header, add their item size at
//! offset 24, and lay their elements out as `bytes.rs` describes.)
//!
//! The creator writes version, type and length, then stores the magic with
//! Release ordering; `open` loads it with Acquire ordering before reading
//! the rest, so an attach that races with a create either sees the whole
//! header or refuses the segment as not (yet) a list. Elements are read and
//! written as 64-bit atomics (the bits of an `f64` for `CONC_TYPE_F64`).
//!
//! `conc_list_add_i64` and `conc_list_compare_exchange_i64` are one
//! sequentially consistent `fetch_add` / `compare_exchange` on the element's
//! word, atomic across processes because the word is in shared memory and
//! lock-free on every 64-bit target conc builds for. Their hot path, a live
//! I64 list and an index in range, is checked inline with no guard and no
//! message (it cannot fail), so a shared counter costs little more than a
//! bare C11 `atomic_fetch_add` (benches/bench_list.c); every other case
//! takes the checked path, which records the message.

use std::ffi::{c_char, CStr};
use std::ptr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use crate::error::{
    conc_status, Error, Result, CONC_ERR_BUSY, CONC_ERR_OUT_OF_RANGE, CONC_ERR_RESOURCE_EXHAUSTED,
};
use crate::ffi::{c_str, guard, guard_value, opt_out_ref, out_ref};
use crate::shm::{Segment, ShowName};

mod bytes;
pub use bytes::{conc_list_create_bytes, conc_list_get_bytes, conc_list_set_bytes};

/// The element type of a shared list.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum conc_type {
    /// 64-bit signed integers (`int64_t`).
    CONC_TYPE_I64 = 0,
    /// 64-bit floating point numbers (`double`).
    CONC_TYPE_F64 = 1,
    /// Byte strings of 0 to `item_size` bytes each (see
    /// `conc_list_create_bytes`).
    CONC_TYPE_BYTES = 2,
}

pub use conc_type::*;

/// A `conc_type` as it arrives from C: any integer, checked before use.
/// Spelled `conc_type` in the header.
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct RawType(pub u32);

impl conc_type {
    fn from_raw(raw: u32) -> Option<conc_type> {
        match raw {
            0 => Some(CONC_TYPE_I64),
            1 => Some(CONC_TYPE_F64),
            2 => Some(CONC_TYPE_BYTES),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            CONC_TYPE_I64 => "CONC_TYPE_I64",
            CONC_TYPE_F64 => "CONC_TYPE_F64",
            CONC_TYPE_BYTES => "CONC_TYPE_BYTES",
        }
    }
}

/// `"conclst\0"` read as a native-endian u64.
const MAGIC: u64 = u64::from_ne_bytes(*b"conclst\0");
const VERSION: u32 = 1;

/// The header at the start of every list segment.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    ty: AtomicU32,
    len: AtomicU64,
}

const HEADER_SIZE: usize = std::mem::size_of::<Header>();
const ELEMENT_SIZE: usize = 8;

// The elements must start 8-byte aligned (mappings are page-aligned).
const _: () = assert!(HEADER_SIZE.is_multiple_of(ELEMENT_SIZE) && HEADER_SIZE == 24);

/// The segment size for `len` elements, if it fits in a `usize`.
fn segment_size(len: usize) -> Option<usize> {
    len.checked_mul(ELEMENT_SIZE)?.checked_add(HEADER_SIZE)
}

/// A shared list mapped into this process: the counterpart of Python's
/// `ShareableList`. Made by `conc_list_create` or `conc_list_open`,
/// released by `conc_list_close`.
#[allow(non_camel_case_types)]
pub struct conc_list {
    segment: Segment,
    ty: conc_type,
    len: usize,
    /// 8 for numbers; the largest element of a bytes list.
    item_size: usize,
}

impl crate::handle::Object for conc_list {
    const KIND: crate::handle::Kind = crate::handle::Kind::List;
}

impl conc_list {
    fn header(segment: &Segment) -> &Header {
        // SAFETY: every list segment is at least HEADER_SIZE bytes (checked
        // by create and open), page-aligned, and mapped while `segment`
        // lives; the header's fields are atomics, so other processes may
        // write them concurrently.
        unsafe { &*segment.as_ptr().cast::<Header>() }
    }

    /// The element `index` (checked by the caller) as 64 atomic bits.
    fn slot(&self, index: usize) -> &AtomicU64 {
        debug_assert!(index < self.len);
        // SAFETY: index < len, and the segment holds HEADER_SIZE + len * 8
        // bytes (checked by create and open); the offset is 8-aligned in a
        // page-aligned mapping that lives as long as `self`.
        unsafe {
            &*self
                .segment
                .as_ptr()
                .add(HEADER_SIZE + index * ELEMENT_SIZE)
                .cast::<AtomicU64>()
        }
    }

    /// Checks the index and type for the accessor `op` of a numeric list.
    fn check(&self, op: &str, index: usize, ty: conc_type) -> Result<&AtomicU64> {
        self.check_element(op, index, ty)?;
        Ok(self.slot(index))
    }

    /// Checks that the list holds `ty` values and that `index` is in range,
    /// for the accessor `op`.
    fn check_element(&self, op: &str, index: usize, ty: conc_type) -> Result<()> {
        let call = || crate::msg!("{op}({}, {index})", ShowName(Some(self.segment.name())));
        if self.ty != ty {
            return Err(Error::invalid(format_args!(
                "{}: the list holds {} values, not {}",
                call(),
                self.ty.name(),
                ty.name()
            )));
        }
        if index >= self.len {
            return Err(Error::new(
                CONC_ERR_OUT_OF_RANGE,
                format_args!("{}: index past the end (length {})", call(), self.len),
            ));
        }
        Ok(())
    }
}

/// The element `index` of the live `CONC_TYPE_I64` list `list`, or None
/// for anything the checked path must refuse (NULL, a closed or forged
/// handle, another type, an index past the end).
#[inline(always)]
fn fast_i64_slot<'a>(list: *const conc_list, index: usize) -> Option<&'a AtomicI64> {
    let list: &'a conc_list = crate::handle::lookup(list)?;
    if list.ty == CONC_TYPE_I64 && index < list.len {
        Some(as_i64(list.slot(index)))
    } else {
        None
    }
}

// AtomicI64 and AtomicU64 have the same layout; the i64 accessors use the
// signed view so that no bit-casting is needed.
fn as_i64(slot: &AtomicU64) -> &AtomicI64 {
    // SAFETY: AtomicI64 and AtomicU64 have the same size, alignment and bit
    // validity.
    unsafe { &*(slot as *const AtomicU64).cast::<AtomicI64>() }
}

/// Creates a new shared list of `len` elements of `type`, all zero, in a
/// new segment named `name` (the rules and the behaviour of
/// `conc_shm_create`: NULL picks a random `psm_` name, mode 0600, never an
/// existing segment, no name left behind on failure). Another process
/// attaches with `conc_list_open(name)` alone.
///
/// On success `*out` is the new handle, owned by the caller until
/// `conc_list_close`; the segment stays until `conc_list_unlink`. On
/// failure `*out` is NULL.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`out` NULL, bad name, unknown
/// type, `CONC_TYPE_BYTES` (use `conc_list_create_bytes`), `len` 0),
/// `CONC_ERR_ALREADY_EXISTS`,
/// `CONC_ERR_RESOURCE_EXHAUSTED` (no space, or a length no segment can
/// hold), `CONC_ERR_PERMISSION_DENIED`, `CONC_ERR_IO`.
///
/// # Safety
/// `out` must be NULL or valid for writes; `name` NULL or a NUL-terminated
/// string.
#[no_mangle]
pub unsafe extern "C" fn conc_list_create(
    out: *mut *mut conc_list,
    name: *const c_char,
    r#type: RawType,
    len: usize,
) -> conc_status {
    const OP: &str = "conc_list_create";
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
        let call =
            |ty: &dyn std::fmt::Display| crate::msg!("{OP}({}, {ty}, {len})", ShowName(name));
        let Some(ty) = conc_type::from_raw(r#type.0) else {
            return Err(Error::invalid(format_args!(
                "{}: unknown conc_type value",
                call(&r#type.0)
            )));
        };
        if ty == CONC_TYPE_BYTES {
            return Err(Error::invalid(format_args!(
                "{}: byte-string lists are made by conc_list_create_bytes, which takes their item size",
                call(&ty.name())
            )));
        }
        if len == 0 {
            return Err(Error::invalid(format_args!(
                "{}: the length is 0",
                call(&ty.name())
            )));
        }
        *out = create_list(
            OP,
            name,
            ty,
            len,
            ELEMENT_SIZE,
            format_args!(", {}, {len}", ty.name()),
        )?;
        Ok(())
    })
}

/// Makes a new list segment of `len` elements of `ty` (checked by the
/// caller: `len > 0`, `item_size > 0`), writes its header, publishes it
/// last, and returns the new handle. `rest` is the rest of the call for
/// messages.
pub(crate) fn create_list(
    op: &str,
    name: Option<&CStr>,
    ty: conc_type,
    len: usize,
    item_size: usize,
    rest: std::fmt::Arguments<'_>,
) -> Result<*mut conc_list> {
    let size = match ty {
        CONC_TYPE_BYTES => bytes::segment_size(len, item_size),
        _ => segment_size(len),
    };
    let Some(size) = size else {
        return Err(Error::new(
            CONC_ERR_RESOURCE_EXHAUSTED,
            format_args!(
                "{op}({}{rest}): larger than the largest possible segment",
                ShowName(name)
            ),
        ));
    };
    let segment = Segment::create(op, name, size, rest)?;
    let header = conc_list::header(&segment);
    header.version.store(VERSION, Ordering::Relaxed);
    header.ty.store(ty as u32, Ordering::Relaxed);
    header.len.store(len as u64, Ordering::Relaxed);
    if ty == CONC_TYPE_BYTES {
        bytes::write_item_size(&segment, item_size);
    }
    // Published last: whoever sees the magic sees the fields above.
    header.magic.store(MAGIC, Ordering::Release);
    crate::handle::publish(conc_list {
        segment,
        ty,
        len,
        item_size,
    })
}

/// Attaches to the existing shared list `name`, taking its type and length
/// from the segment.
///
/// On success `*out` is the new handle, owned by the caller until
/// `conc_list_close`; on failure NULL.
///
/// If another process shrinks the segment while it is mapped, touching the
/// lost elements raises SIGBUS, as with any mapping.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`out` or `name` NULL, bad name, or
/// a segment that is not a conc list, e.g. one made by `conc_shm_create`,
/// or one still being created), `CONC_ERR_NOT_FOUND`,
/// `CONC_ERR_PERMISSION_DENIED`, `CONC_ERR_RESOURCE_EXHAUSTED`,
/// `CONC_ERR_IO`.
///
/// # Safety
/// `out` must be NULL or valid for writes; `name` NULL or a NUL-terminated
/// string.
#[no_mangle]
pub unsafe extern "C" fn conc_list_open(
    out: *mut *mut conc_list,
    name: *const c_char,
) -> conc_status {
    const OP: &str = "conc_list_open";
    guard(OP, || {
        // SAFETY: out is NULL or valid for writes (caller contract).
        let out = unsafe { out_ref(out, OP, "out") }?;
        *out = ptr::null_mut();
        // SAFETY: name is NULL or NUL-terminated (caller contract).
        let name = unsafe { c_str(name, OP, "name") }?;
        let segment = Segment::open(OP, name)?;
        let not_a_list = |why: &str| {
            Error::invalid(format_args!(
                "{OP}({}): not a conc list ({why})",
                ShowName(Some(name))
            ))
        };
        if segment.size() < HEADER_SIZE {
            return Err(not_a_list("too small for a list header"));
        }
        let header = conc_list::header(&segment);
        if header.magic.load(Ordering::Acquire) != MAGIC {
            return Err(not_a_list("no list header, or one still being written"));
        }
        let version = header.version.load(Ordering::Relaxed);
        if version != VERSION {
            return Err(not_a_list(&crate::msg!("unknown list version {version}")));
        }
        let Some(ty) = conc_type::from_raw(header.ty.load(Ordering::Relaxed)) else {
            return Err(not_a_list("unknown element type"));
        };
        let len = usize::try_from(header.len.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        let (item_size, need) = if ty == CONC_TYPE_BYTES {
            let item_size = bytes::read_item_size(&segment).map_err(|why| not_a_list(&why))?;
            (item_size, bytes::segment_size(len, item_size))
        } else {
            (ELEMENT_SIZE, segment_size(len))
        };
        match need {
            Some(need) if len > 0 && need <= segment.size() => {}
            _ => {
                return Err(not_a_list(&crate::msg!(
                    "a length of {len} does not fit its {} bytes",
                    segment.size()
                )))
            }
        }
        *out = crate::handle::publish(conc_list {
            segment,
            ty,
            len,
            item_size,
        })?;
        Ok(())
    })
}

/// Returns the number of elements, fixed at create. 0 when `list` is NULL.
///
/// # Safety
/// `list` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn conc_list_len(list: *const conc_list) -> usize {
    guard_value("conc_list_len", 0, || {
        crate::handle::lookup(list).map_or(0, |l| l.len)
    })
}

/// Returns the element type, fixed at create. `CONC_TYPE_I64` when `list`
/// is NULL.
///
/// # Safety
/// `list` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn conc_list_type(list: *const conc_list) -> conc_type {
    guard_value("conc_list_type", CONC_TYPE_I64, || {
        crate::handle::lookup(list).map_or(CONC_TYPE_I64, |l| l.ty)
    })
}

/// Returns the size of one element in bytes: 8 for `CONC_TYPE_I64` and
/// `CONC_TYPE_F64` lists, the `item_size` given at create (the longest
/// byte string an element holds) for `CONC_TYPE_BYTES` lists. 0 when
/// `list` is NULL.
///
/// # Safety
/// `list` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn conc_list_item_size(list: *const conc_list) -> usize {
    guard_value("conc_list_item_size", 0, || {
        crate::handle::lookup(list).map_or(0, |l| l.item_size)
    })
}

/// Returns the list's segment name without a leading `/` (e.g.
/// `"psm_1f2e3d4c"`), the name other processes pass to `conc_list_open`.
/// Owned by the handle, valid until `conc_list_close`. `""` when `list` is
/// NULL.
///
/// # Safety
/// `list` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn conc_list_name(list: *const conc_list) -> *const c_char {
    guard_value("conc_list_name", c"".as_ptr(), || {
        crate::handle::lookup(list).map_or(c"".as_ptr(), |l| l.segment.name().as_ptr())
    })
}

/// Stores `value` at `index` of a `CONC_TYPE_I64` list, atomically (a
/// release store): every process sees either the old or the new value.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`list` NULL, or a list that does
/// not hold `CONC_TYPE_I64` values), `CONC_ERR_OUT_OF_RANGE` (`index >= conc_list_len(list)`).
///
/// # Safety
/// `list` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn conc_list_set_i64(
    list: *mut conc_list,
    index: usize,
    value: i64,
) -> conc_status {
    const OP: &str = "conc_list_set_i64";
    guard(OP, || {
        let list = crate::handle::get(list, OP, "list")?;
        as_i64(list.check(OP, index, CONC_TYPE_I64)?).store(value, Ordering::Release);
        Ok(())
    })
}

/// Reads the element at `index` of a `CONC_TYPE_I64` list into `*value`,
/// atomically (an acquire load).
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`list` or `value` NULL, or a list
/// that does not hold `CONC_TYPE_I64` values), `CONC_ERR_OUT_OF_RANGE` (`index >=
/// conc_list_len(list)`). `*value` is written only on success.
///
/// # Safety
/// `list` must be NULL or a live handle; `value` NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn conc_list_get_i64(
    list: *const conc_list,
    index: usize,
    value: *mut i64,
) -> conc_status {
    const OP: &str = "conc_list_get_i64";
    guard(OP, || {
        let list = crate::handle::get(list, OP, "list")?;
        // SAFETY: NULL or valid for writes (caller contract).
        let value = unsafe { out_ref(value, OP, "value") }?;
        *value = as_i64(list.check(OP, index, CONC_TYPE_I64)?).load(Ordering::Acquire);
        Ok(())
    })
}

/// Adds `delta` to the element at `index` of a `CONC_TYPE_I64` list in one
/// atomic read-modify-write (a sequentially consistent `fetch_add` on the
/// shared word), so processes and threads can share counters without a
/// lock: concurrent adds are never lost. Wraps around on overflow, like
/// two's-complement addition (`INT64_MAX + 1` is `INT64_MIN`).
///
/// `previous`, when not NULL, receives the value the element held just
/// before this add; it is written only on success.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`list` NULL, or a list that does
/// not hold `CONC_TYPE_I64` values), `CONC_ERR_OUT_OF_RANGE` (`index >=
/// conc_list_len(list)`), `CONC_ERR_INVALID_STATE` (a closed handle).
///
/// # Safety
/// `list` must be NULL or a live handle; `previous` NULL or valid for
/// writes.
#[no_mangle]
pub unsafe extern "C" fn conc_list_add_i64(
    list: *mut conc_list,
    index: usize,
    delta: i64,
    previous: *mut i64,
) -> conc_status {
    // The fast path: a live I64 list and an index in range, the only case
    // that needs speed (shared counters). It cannot fail or panic, so it
    // skips the guard; everything else takes the checked path below.
    if let Some(slot) = fast_i64_slot(list, index) {
        let old = slot.fetch_add(delta, Ordering::SeqCst);
        // SAFETY: NULL or valid for writes (caller contract).
        if let Some(previous) = unsafe { opt_out_ref(previous) } {
            *previous = old;
        }
        return crate::error::CONC_OK;
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { add_i64_checked(list, index, delta, previous) }
}

/// `conc_list_add_i64` with every check and its error message, out of the
/// fast path's way.
///
/// # Safety
/// As `conc_list_add_i64`.
#[cold]
#[inline(never)]
unsafe fn add_i64_checked(
    list: *mut conc_list,
    index: usize,
    delta: i64,
    previous: *mut i64,
) -> conc_status {
    const OP: &str = "conc_list_add_i64";
    guard(OP, || {
        let list = crate::handle::get(list, OP, "list")?;
        let old = as_i64(list.check(OP, index, CONC_TYPE_I64)?).fetch_add(delta, Ordering::SeqCst);
        // SAFETY: NULL or valid for writes (caller contract).
        if let Some(previous) = unsafe { opt_out_ref(previous) } {
            *previous = old;
        }
        Ok(())
    })
}

/// Stores `desired` at `index` of a `CONC_TYPE_I64` list only if the
/// element equals `expected`, in one atomic compare-and-exchange (sequentially
/// consistent). Returns `CONC_OK` when it stored `desired`, and
/// `CONC_ERR_BUSY` when the element held another value (nothing changed).
///
/// `actual`, when not NULL, receives the value found in the element, on
/// `CONC_OK` (then equal to `expected`) and on `CONC_ERR_BUSY` alike: one
/// of the documented exceptions to "outputs are written only on success".
/// It is not written for any other error. A `CONC_ERR_BUSY` records a
/// message naming the value found, like any failure.
///
/// Errors: `CONC_ERR_BUSY` (the element was not `expected`),
/// `CONC_ERR_INVALID_ARGUMENT` (`list` NULL, or a list that does not hold
/// `CONC_TYPE_I64` values), `CONC_ERR_OUT_OF_RANGE` (`index >=
/// conc_list_len(list)`), `CONC_ERR_INVALID_STATE` (a closed handle).
///
/// # Safety
/// `list` must be NULL or a live handle; `actual` NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn conc_list_compare_exchange_i64(
    list: *mut conc_list,
    index: usize,
    expected: i64,
    desired: i64,
    actual: *mut i64,
) -> conc_status {
    if let Some(slot) = fast_i64_slot(list, index) {
        if let Ok(found) =
            slot.compare_exchange(expected, desired, Ordering::SeqCst, Ordering::SeqCst)
        {
            // SAFETY: NULL or valid for writes (caller contract).
            if let Some(actual) = unsafe { opt_out_ref(actual) } {
                *actual = found;
            }
            return crate::error::CONC_OK;
        }
        // Not equal: the checked path below tries again, records the
        // message and writes *actual. Trying again is the same as trying
        // once a moment later, which a caller cannot tell apart.
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { compare_exchange_i64_checked(list, index, expected, desired, actual) }
}

/// `conc_list_compare_exchange_i64` with every check, the message and the
/// BUSY answer, out of the fast path's way.
///
/// # Safety
/// As `conc_list_compare_exchange_i64`.
#[cold]
#[inline(never)]
unsafe fn compare_exchange_i64_checked(
    list: *mut conc_list,
    index: usize,
    expected: i64,
    desired: i64,
    actual: *mut i64,
) -> conc_status {
    const OP: &str = "conc_list_compare_exchange_i64";
    guard(OP, || {
        let list = crate::handle::get(list, OP, "list")?;
        let slot = as_i64(list.check(OP, index, CONC_TYPE_I64)?);
        let result = slot.compare_exchange(expected, desired, Ordering::SeqCst, Ordering::SeqCst);
        let found = match result {
            Ok(v) | Err(v) => v,
        };
        // SAFETY: NULL or valid for writes (caller contract).
        if let Some(actual) = unsafe { opt_out_ref(actual) } {
            *actual = found;
        }
        match result {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::new(
                CONC_ERR_BUSY,
                format_args!(
                    "{OP}({}, {index}): the element holds {found}, not the expected {expected}",
                    ShowName(Some(list.segment.name()))
                ),
            )),
        }
    })
}

/// Stores `value` at `index` of a `CONC_TYPE_F64` list, atomically (a
/// release store of its 64 bits).
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`list` NULL, or a list that does
/// not hold `CONC_TYPE_F64` values), `CONC_ERR_OUT_OF_RANGE` (`index >= conc_list_len(list)`).
///
/// # Safety
/// `list` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn conc_list_set_f64(
    list: *mut conc_list,
    index: usize,
    value: f64,
) -> conc_status {
    const OP: &str = "conc_list_set_f64";
    guard(OP, || {
        let list = crate::handle::get(list, OP, "list")?;
        list.check(OP, index, CONC_TYPE_F64)?
            .store(value.to_bits(), Ordering::Release);
        Ok(())
    })
}

/// Reads the element at `index` of a `CONC_TYPE_F64` list into `*value`,
/// atomically (an acquire load of its 64 bits).
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`list` or `value` NULL, or a list
/// that does not hold `CONC_TYPE_F64` values), `CONC_ERR_OUT_OF_RANGE` (`index >=
/// conc_list_len(list)`). `*value` is written only on success.
///
/// # Safety
/// `list` must be NULL or a live handle; `value` NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn conc_list_get_f64(
    list: *const conc_list,
    index: usize,
    value: *mut f64,
) -> conc_status {
    const OP: &str = "conc_list_get_f64";
    guard(OP, || {
        let list = crate::handle::get(list, OP, "list")?;
        // SAFETY: NULL or valid for writes (caller contract).
        let value = unsafe { out_ref(value, OP, "value") }?;
        *value = f64::from_bits(
            list.check(OP, index, CONC_TYPE_F64)?
                .load(Ordering::Acquire),
        );
        Ok(())
    })
}

/// Removes the list's segment name, as `conc_shm_unlink` does: no process
/// can attach any more; mappings stay usable until closed.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`list` NULL), `CONC_ERR_NOT_FOUND`
/// (unlinked already through this handle, or the name is gone),
/// `CONC_ERR_PERMISSION_DENIED`, `CONC_ERR_IO`.
///
/// # Safety
/// `list` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn conc_list_unlink(list: *const conc_list) -> conc_status {
    const OP: &str = "conc_list_unlink";
    guard(OP, || {
        let list = crate::handle::get(list, OP, "list")?;
        list.segment.unlink(OP)
    })
}

/// Unmaps the list and frees the handle; the segment and its name stay
/// (see `conc_list_unlink`). The name pointer is invalid afterwards.
///
/// NULL is a no-op returning `CONC_OK`. Errors: `CONC_ERR_INVALID_STATE`
/// for a handle closed already, or never made by conc (it is left alone).
/// The check is a safety net, not a licence: once a handle is closed, conc
/// may hand out its address again for a new list, which a second close
/// of the stale pointer would then close.
///
/// # Safety
/// `list` must be NULL or a pointer from `conc_list_create`/
/// `conc_list_open`; no other thread may be using the handle.
#[no_mangle]
pub unsafe extern "C" fn conc_list_close(list: *mut conc_list) -> conc_status {
    const OP: &str = "conc_list_close";
    guard(OP, || {
        if list.is_null() {
            return Ok(());
        }
        drop(crate::handle::release(list, OP, "list")?);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::*;
    use crate::shm::tests::{in_dev_shm, shm_lock, unique};
    use crate::shm::{conc_shm_buf, conc_shm_close, conc_shm_create, conc_shm_unlink_name};
    use std::ffi::CString;

    fn create(name: Option<&CStr>, ty: u32, len: usize) -> (conc_status, *mut conc_list) {
        let mut out = std::ptr::dangling_mut::<conc_list>();
        let name = name.map_or(ptr::null(), CStr::as_ptr);
        // SAFETY: out is valid; name is NULL or a C string.
        let st = unsafe { conc_list_create(&mut out, name, RawType(ty), len) };
        (st, out)
    }

    fn open(name: &CStr) -> (conc_status, *mut conc_list) {
        let mut out = std::ptr::dangling_mut::<conc_list>();
        // SAFETY: out is valid; name is a C string.
        let st = unsafe { conc_list_open(&mut out, name.as_ptr()) };
        (st, out)
    }

    fn name_of(list: *const conc_list) -> CString {
        // SAFETY: NULL or a live handle; the name is a C string.
        unsafe { CStr::from_ptr(conc_list_name(list)) }.to_owned()
    }

    #[test]
    fn create_open_share_i64() {
        let _lock = shm_lock();
        let (st, a) = create(None, 0, 100);
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        let name = name_of(a);
        assert!(name.to_str().unwrap().starts_with("psm_"));
        let (st, b) = open(&name);
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        // SAFETY: live handles and valid out pointers.
        unsafe {
            assert_eq!(conc_list_len(b), 100);
            assert_eq!(conc_list_type(b), CONC_TYPE_I64);
            assert_eq!(name_of(b), name);
            let mut v = 5;
            assert_eq!(conc_list_get_i64(b, 99, &mut v), CONC_OK);
            assert_eq!(v, 0);
            assert_eq!(conc_list_set_i64(a, 99, -7), CONC_OK);
            assert_eq!(conc_list_get_i64(b, 99, &mut v), CONC_OK);
            assert_eq!(v, -7);
            assert_eq!(conc_list_set_i64(a, 100, 1), CONC_ERR_OUT_OF_RANGE);
            assert_eq!(
                last_error_message(),
                format!(
                    "conc_list_set_i64(\"{}\", 100): index past the end (length 100)",
                    name.to_str().unwrap()
                )
            );
            assert_eq!(
                conc_list_get_i64(b, usize::MAX, &mut v),
                CONC_ERR_OUT_OF_RANGE
            );
            assert_eq!(v, -7);
            let mut f = 0.0;
            assert_eq!(conc_list_get_f64(b, 0, &mut f), CONC_ERR_INVALID_ARGUMENT);
            assert!(last_error_message().contains("holds CONC_TYPE_I64 values, not CONC_TYPE_F64"));
            assert_eq!(conc_list_set_f64(a, 0, 1.0), CONC_ERR_INVALID_ARGUMENT);
            assert_eq!(
                conc_list_get_i64(b, 0, ptr::null_mut()),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(conc_list_unlink(a), CONC_OK);
            assert!(!in_dev_shm(&name));
            assert_eq!(conc_list_unlink(a), CONC_ERR_NOT_FOUND);
            assert_eq!(conc_list_unlink(b), CONC_ERR_NOT_FOUND);
            assert_eq!(conc_list_set_i64(b, 1, 11), CONC_OK);
            assert_eq!(conc_list_get_i64(a, 1, &mut v), CONC_OK);
            assert_eq!(v, 11);
            assert_eq!(conc_list_close(a), CONC_OK);
            assert_eq!(conc_list_close(b), CONC_OK);
            assert_eq!(conc_list_close(b), CONC_ERR_INVALID_STATE);
            assert_eq!(conc_list_close(ptr::null_mut()), CONC_OK);
        }
    }

    #[test]
    fn f64_list() {
        let _lock = shm_lock();
        let name = unique("lf64");
        let (st, a) = create(Some(&name), 1, 3);
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        let (st, b) = open(&name);
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        // SAFETY: live handles and valid out pointers.
        unsafe {
            assert_eq!(conc_list_type(b), CONC_TYPE_F64);
            assert_eq!(conc_list_len(b), 3);
            let mut f = 1.0;
            assert_eq!(conc_list_get_f64(b, 2, &mut f), CONC_OK);
            assert_eq!(f, 0.0);
            assert_eq!(conc_list_set_f64(a, 2, -2.5), CONC_OK);
            assert_eq!(conc_list_get_f64(b, 2, &mut f), CONC_OK);
            assert_eq!(f, -2.5);
            assert_eq!(conc_list_set_f64(a, 3, 0.0), CONC_ERR_OUT_OF_RANGE);
            let mut v = 0;
            assert_eq!(conc_list_get_i64(b, 0, &mut v), CONC_ERR_INVALID_ARGUMENT);
            assert_eq!(conc_list_set_i64(b, 0, 1), CONC_ERR_INVALID_ARGUMENT);
            assert_eq!(conc_list_unlink(b), CONC_OK);
            assert_eq!(conc_list_close(a), CONC_OK);
            assert_eq!(conc_list_close(b), CONC_OK);
        }
        assert!(!in_dev_shm(&name));
    }

    #[test]
    fn bad_arguments() {
        let _lock = shm_lock();
        let name = unique("lbad");
        for (ty, len) in [(2u32, 10usize), (u32::MAX, 10), (0, 0)] {
            let (st, p) = create(Some(&name), ty, len);
            assert_eq!((st, p.is_null()), (CONC_ERR_INVALID_ARGUMENT, true));
        }
        assert!(last_error_message().contains("the length is 0"));
        let (st, p) = create(Some(&name), 0, usize::MAX);
        assert_eq!((st, p.is_null()), (CONC_ERR_RESOURCE_EXHAUSTED, true));
        // Fits a usize but not an off_t: refused before any syscall.
        let (st, p) = create(Some(&name), 0, i64::MAX as usize / 8);
        assert_eq!((st, p.is_null()), (CONC_ERR_RESOURCE_EXHAUSTED, true));
        assert!(!in_dev_shm(&name));
        let (st, p) = create(Some(c"/.."), 0, 1);
        assert_eq!((st, p.is_null()), (CONC_ERR_INVALID_ARGUMENT, true));
        let (st, p) = open(&name);
        assert_eq!((st, p.is_null()), (CONC_ERR_NOT_FOUND, true));
        // SAFETY: NULL pointers are refused before use.
        unsafe {
            assert_eq!(
                conc_list_create(ptr::null_mut(), ptr::null(), RawType(0), 1),
                CONC_ERR_INVALID_ARGUMENT
            );
            let mut out = std::ptr::dangling_mut::<conc_list>();
            assert_eq!(
                conc_list_open(&mut out, ptr::null()),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert!(out.is_null());
            assert_eq!(
                conc_list_open(ptr::null_mut(), c"x".as_ptr()),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(conc_list_len(ptr::null()), 0);
            assert_eq!(conc_list_type(ptr::null()), CONC_TYPE_I64);
            assert_eq!(name_of(ptr::null()).as_bytes(), b"");
            let mut v = 0;
            let mut f = 0.0;
            assert_eq!(
                conc_list_set_i64(ptr::null_mut(), 0, 1),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                conc_list_get_i64(ptr::null(), 0, &mut v),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                conc_list_set_f64(ptr::null_mut(), 0, 1.0),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                conc_list_get_f64(ptr::null(), 0, &mut f),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(conc_list_unlink(ptr::null()), CONC_ERR_INVALID_ARGUMENT);
        }
    }

    #[test]
    fn add_and_compare_exchange() {
        let _lock = shm_lock();
        let (st, a) = create(None, 0, 4);
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        let (st, f) = create(None, 1, 4);
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        // SAFETY: live handles and valid out pointers.
        unsafe {
            let mut prev = 99;
            assert_eq!(conc_list_add_i64(a, 1, 5, &mut prev), CONC_OK);
            assert_eq!(prev, 0);
            assert_eq!(conc_list_add_i64(a, 1, -7, ptr::null_mut()), CONC_OK);
            let mut v = 0;
            assert_eq!(conc_list_get_i64(a, 1, &mut v), CONC_OK);
            assert_eq!(v, -2);
            // Wraps like two's complement.
            assert_eq!(conc_list_set_i64(a, 2, i64::MAX), CONC_OK);
            assert_eq!(conc_list_add_i64(a, 2, 1, &mut prev), CONC_OK);
            assert_eq!(prev, i64::MAX);
            assert_eq!(conc_list_get_i64(a, 2, &mut v), CONC_OK);
            assert_eq!(v, i64::MIN);
            assert_eq!(conc_list_add_i64(a, 2, -1, &mut prev), CONC_OK);
            assert_eq!(conc_list_get_i64(a, 2, &mut v), CONC_OK);
            assert_eq!((prev, v), (i64::MIN, i64::MAX));
            // Errors leave `previous` alone.
            prev = 42;
            assert_eq!(conc_list_add_i64(a, 4, 1, &mut prev), CONC_ERR_OUT_OF_RANGE);
            assert_eq!(
                conc_list_add_i64(f, 0, 1, &mut prev),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert!(last_error_message().contains("conc_list_add_i64"));
            assert_eq!(
                conc_list_add_i64(ptr::null_mut(), 0, 1, &mut prev),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(prev, 42);

            let mut actual = 0;
            assert_eq!(
                conc_list_compare_exchange_i64(a, 3, 0, 10, &mut actual),
                CONC_OK
            );
            assert_eq!(actual, 0);
            assert_eq!(
                conc_list_compare_exchange_i64(a, 3, 0, 20, &mut actual),
                CONC_ERR_BUSY
            );
            assert_eq!(actual, 10);
            assert!(last_error_message().contains("holds 10, not the expected 0"));
            assert_eq!(conc_list_get_i64(a, 3, &mut v), CONC_OK);
            assert_eq!(v, 10);
            assert_eq!(
                conc_list_compare_exchange_i64(a, 3, 10, 20, ptr::null_mut()),
                CONC_OK
            );
            assert_eq!(
                conc_list_compare_exchange_i64(a, 3, 10, 30, ptr::null_mut()),
                CONC_ERR_BUSY
            );
            actual = 7;
            assert_eq!(
                conc_list_compare_exchange_i64(a, 4, 20, 30, &mut actual),
                CONC_ERR_OUT_OF_RANGE
            );
            assert_eq!(
                conc_list_compare_exchange_i64(f, 0, 0, 1, &mut actual),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                conc_list_compare_exchange_i64(ptr::null_mut(), 0, 0, 1, &mut actual),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(actual, 7);
            assert_eq!(conc_list_get_i64(a, 3, &mut v), CONC_OK);
            assert_eq!(v, 20);
            let mut d = 0.0;
            assert_eq!(conc_list_get_f64(f, 0, &mut d), CONC_OK);
            assert_eq!(d, 0.0);
            assert_eq!(conc_list_unlink(a), CONC_OK);
            assert_eq!(conc_list_unlink(f), CONC_OK);
            assert_eq!(conc_list_close(a), CONC_OK);
            assert_eq!(conc_list_close(f), CONC_OK);
            assert_eq!(
                conc_list_add_i64(a, 0, 1, &mut prev),
                CONC_ERR_INVALID_STATE
            );
            assert_eq!(
                conc_list_compare_exchange_i64(a, 0, 0, 1, &mut actual),
                CONC_ERR_INVALID_STATE
            );
        }
    }

    #[test]
    fn concurrent_adds_are_never_lost() {
        let _lock = shm_lock();
        let (st, a) = create(None, 0, 1);
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        let handle = a as usize;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        // SAFETY: the handle stays live until the joins.
                        let st = unsafe {
                            conc_list_add_i64(handle as *mut conc_list, 0, 3, ptr::null_mut())
                        };
                        assert_eq!(st, CONC_OK);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut v = 0;
        // SAFETY: live handle.
        unsafe {
            assert_eq!(conc_list_get_i64(a, 0, &mut v), CONC_OK);
            assert_eq!(v, 120_000);
            assert_eq!(conc_list_unlink(a), CONC_OK);
            assert_eq!(conc_list_close(a), CONC_OK);
        }
    }

    /// Writes `header` (magic, version, type, len) into a fresh plain
    /// segment of `size` bytes and tries to open it as a list.
    fn open_forged(tag: &str, size: usize, header: Option<(u64, u32, u32, u64)>) -> String {
        let _lock = shm_lock();
        let name = unique(tag);
        let mut shm = ptr::null_mut();
        // SAFETY: valid out pointer and name; the header fits when given.
        unsafe {
            assert_eq!(conc_shm_create(&mut shm, name.as_ptr(), size), CONC_OK);
            if let Some((magic, version, ty, len)) = header {
                let p = conc_shm_buf(shm);
                p.cast::<u64>().write(magic);
                p.add(8).cast::<u32>().write(version);
                p.add(12).cast::<u32>().write(ty);
                p.add(16).cast::<u64>().write(len);
            }
        }
        let (st, p) = open(&name);
        let msg = last_error_message();
        assert_eq!(
            (st, p.is_null()),
            (CONC_ERR_INVALID_ARGUMENT, true),
            "{msg}"
        );
        // SAFETY: live handle and C string.
        unsafe {
            assert_eq!(conc_shm_close(shm), CONC_OK);
            assert_eq!(conc_shm_unlink_name(name.as_ptr()), CONC_OK);
        }
        assert!(msg.contains("not a conc list"), "{msg}");
        assert!(msg.contains(name.to_str().unwrap()), "{msg}");
        msg
    }

    #[test]
    fn not_a_list() {
        let _lock = shm_lock();
        open_forged("nl_plain", 100, None);
        open_forged("nl_small", 8, None);
        let msg = open_forged("nl_ver", 64, Some((MAGIC, 2, 0, 1)));
        assert!(msg.contains("version 2"), "{msg}");
        open_forged("nl_type", 64, Some((MAGIC, 1, 9, 1)));
        open_forged("nl_len0", 64, Some((MAGIC, 1, 0, 0)));
        open_forged("nl_long", 64, Some((MAGIC, 1, 0, 6)));
        open_forged("nl_huge", 64, Some((MAGIC, 1, 0, u64::MAX)));
        // Exactly fitting is a list.
        let name = unique("nl_fit");
        let mut shm = ptr::null_mut();
        // SAFETY: valid pointers; 64 bytes hold the header and 5 elements.
        unsafe {
            assert_eq!(conc_shm_create(&mut shm, name.as_ptr(), 64), CONC_OK);
            let p = conc_shm_buf(shm);
            p.cast::<u64>().write(MAGIC);
            p.add(8).cast::<u32>().write(1);
            p.add(16).cast::<u64>().write(5);
        }
        let (st, list) = open(&name);
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        // SAFETY: live handles.
        unsafe {
            assert_eq!(conc_list_len(list), 5);
            assert_eq!(conc_list_close(list), CONC_OK);
            assert_eq!(conc_shm_close(shm), CONC_OK);
            assert_eq!(conc_shm_unlink_name(name.as_ptr()), CONC_OK);
        }
    }
}
