//! The FFI boundary: every exported function runs its body through
//! [`guard`] (or [`guard_value`] for accessors), which turns an `Err` into
//! its status and a panic into `CONC_ERR_PANIC`, recording the message for
//! `conc_last_error_message`. The pointer helpers here are the only places
//! that turn C pointers into Rust references.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{conc_status, set_last_error, Error, Result, CONC_ERR_PANIC, CONC_OK};

/// Runs `body` for the exported function `op`, never letting a panic
/// unwind into C. On failure the error is recorded for
/// `conc_last_error_message` and its status returned.
pub fn guard(op: &'static str, body: impl FnOnce() -> Result<()>) -> conc_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CONC_OK,
        Ok(Err(err)) => {
            set_last_error(&err);
            err.status
        }
        Err(payload) => {
            let err = panic_error(op, payload.as_ref());
            set_last_error(&err);
            err.status
        }
    }
}

/// Like [`guard`] for functions that return a value instead of a status
/// (accessors): a panic is recorded and `fallback` returned.
pub fn guard_value<T>(op: &'static str, fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            set_last_error(&panic_error(op, payload.as_ref()));
            fallback
        }
    }
}

fn panic_error(op: &str, payload: &(dyn std::any::Any + Send)) -> Error {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic");
    Error::new(
        CONC_ERR_PANIC,
        format!("{op}: internal error (panic: {what}); please report it"),
    )
}

/// Checks that `ptr` is not NULL: `CONC_ERR_INVALID_ARGUMENT` naming `arg`
/// otherwise.
pub fn not_null<T>(ptr: *const T, op: &str, arg: &str) -> Result<()> {
    if ptr.is_null() {
        Err(Error::null(op, arg))
    } else {
        Ok(())
    }
}

/// Turns a required output pointer into a reference.
///
/// # Safety
/// `ptr` must be NULL or valid for writes of a `T` for the lifetime `'a`.
pub unsafe fn out_ref<'a, T>(ptr: *mut T, op: &str, arg: &str) -> Result<&'a mut T> {
    not_null(ptr, op, arg)?;
    // SAFETY: non-NULL, and valid per the caller's contract.
    Ok(unsafe { &mut *ptr })
}

/// Turns an optional output pointer (NULL allowed) into an `Option`.
///
/// # Safety
/// `ptr` must be NULL or valid for writes of a `T` for the lifetime `'a`.
pub unsafe fn opt_out_ref<'a, T>(ptr: *mut T) -> Option<&'a mut T> {
    // SAFETY: valid or NULL per the caller's contract.
    unsafe { ptr.as_mut() }
}

/// Turns a required input pointer into a shared reference.
///
/// # Safety
/// `ptr` must be NULL or point to a live `T` for the lifetime `'a`.
pub unsafe fn in_ref<'a, T>(ptr: *const T, op: &str, arg: &str) -> Result<&'a T> {
    not_null(ptr, op, arg)?;
    // SAFETY: non-NULL, and valid per the caller's contract.
    Ok(unsafe { &*ptr })
}

/// Turns a required mutable input pointer (a handle) into a reference.
///
/// # Safety
/// `ptr` must be NULL or point to a live `T`, not aliased elsewhere, for
/// the lifetime `'a`.
pub unsafe fn in_mut<'a, T>(ptr: *mut T, op: &str, arg: &str) -> Result<&'a mut T> {
    not_null(ptr, op, arg)?;
    // SAFETY: non-NULL, and valid and unaliased per the caller's contract.
    Ok(unsafe { &mut *ptr })
}

/// Turns a required NUL-terminated C string into a `&CStr`.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string that outlives `'a`.
pub unsafe fn c_str<'a>(ptr: *const c_char, op: &str, arg: &str) -> Result<&'a CStr> {
    not_null(ptr, op, arg)?;
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    Ok(unsafe { CStr::from_ptr(ptr) })
}

/// Turns a `(pointer, length)` byte range from C into a slice. A length of
/// 0 gives an empty slice whatever the pointer (NULL included).
///
/// # Safety
/// When `len > 0`, `ptr` must be NULL or valid for reads of `len` bytes
/// for the lifetime `'a`.
pub unsafe fn bytes<'a>(ptr: *const u8, len: usize, op: &str, arg: &str) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    not_null(ptr, op, arg)?;
    // SAFETY: non-NULL and valid for `len` bytes per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// The address of every live object that conc handed out as an opaque
/// pointer (`conc_mmap *`, `conc_shm *`, `conc_list *`), with its type.
/// Close functions take their object out of this map, so closing twice,
/// closing a pointer conc never made, or closing an object with another
/// type's close function (`conc_mmap_close` of a `conc_shm *`) is refused
/// instead of freeing twice or dropping the wrong type.
static LIVE_OBJECTS: Mutex<BTreeMap<usize, TypeId>> = Mutex::new(BTreeMap::new());

/// Locks the live-object map. `conc_process_spawn` holds it across `fork`
/// so that the child never inherits it locked.
pub fn lock_live_objects() -> MutexGuard<'static, BTreeMap<usize, TypeId>> {
    LIVE_OBJECTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hands `object` to C as an opaque pointer that conc owns until the
/// matching [`release`].
pub fn publish<T: 'static>(object: Box<T>) -> *mut T {
    let ptr = Box::into_raw(object);
    lock_live_objects().insert(ptr as usize, TypeId::of::<T>());
    ptr
}

/// Takes back ownership of an object made by [`publish`], for its close
/// function. A pointer that is not a live `T` (closed already, never made
/// by conc, or an object of another type) gives `CONC_ERR_INVALID_STATE`
/// and is left alone.
///
/// # Safety
/// None left to the caller: the pointer is freed only when it is a live
/// `T` made by `publish` (unsafe still, as it frees what C handed in).
pub unsafe fn release<T: 'static>(ptr: *mut T, op: &str, arg: &str) -> Result<Box<T>> {
    not_null(ptr, op, arg)?;
    let refuse = |why: &str| {
        Err(Error::new(
            crate::error::CONC_ERR_INVALID_STATE,
            format!("{op}: `{arg}` is not an open {why}"),
        ))
    };
    {
        let mut live = lock_live_objects();
        match live.get(&(ptr as usize)) {
            None => return refuse("conc object (closed already, or never opened)"),
            Some(&ty) if ty != TypeId::of::<T>() => {
                return refuse(&format!(
                    "{} (it is another kind of conc object)",
                    short_type_name::<T>()
                ))
            }
            Some(_) => {
                live.remove(&(ptr as usize));
            }
        }
    }
    // SAFETY: the pointer was live with type T, so it came from
    // Box::into_raw in publish::<T>, and no other release can have taken it.
    Ok(unsafe { Box::from_raw(ptr) })
}

/// `conc_mmap` for `conc::mmap::conc_mmap`.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{last_error_message, CONC_ERR_INVALID_ARGUMENT, CONC_ERR_INVALID_STATE};

    #[test]
    fn guard_turns_panic_into_status() {
        let status = guard("conc_test_op", || panic!("boom"));
        assert_eq!(status, CONC_ERR_PANIC);
        let msg = last_error_message();
        assert!(
            msg.starts_with("conc_test_op: internal error (panic: boom)"),
            "{msg}"
        );
    }

    #[test]
    fn guard_records_error() {
        let status = guard("op", || Err(Error::null("conc_x", "out")));
        assert_eq!(status, CONC_ERR_INVALID_ARGUMENT);
        assert_eq!(last_error_message(), "conc_x: argument `out` is NULL");
    }

    #[test]
    fn guard_value_returns_fallback_on_panic() {
        let v = guard_value("conc_len", 7usize, || panic!("x"));
        assert_eq!(v, 7);
    }

    #[test]
    fn release_refuses_double_close() {
        let p = publish(Box::new(5u32));
        // SAFETY: p came from publish::<u32>.
        let b = unsafe { release(p, "close", "obj") }.unwrap();
        assert_eq!(*b, 5);
        // SAFETY: p is no longer live, so release must refuse it untouched.
        let again = unsafe { release(p, "close", "obj") };
        assert_eq!(again.unwrap_err().status, CONC_ERR_INVALID_STATE);
    }

    #[test]
    fn release_refuses_another_type() {
        let p = publish(Box::new(5u32));
        // SAFETY: p is live but a u32: release must refuse it untouched.
        let e = unsafe { release(p.cast::<u64>(), "conc_x_close", "x") }.unwrap_err();
        assert_eq!(e.status, CONC_ERR_INVALID_STATE);
        assert_eq!(
            e.message,
            "conc_x_close: `x` is not an open u64 (it is another kind of conc object)"
        );
        // Still live, and still closable as what it is.
        // SAFETY: p came from publish::<u32>.
        assert_eq!(*unsafe { release(p, "close", "obj") }.unwrap(), 5);
    }

    #[test]
    fn bytes_accepts_empty_null() {
        // SAFETY: length 0 never dereferences.
        let s = unsafe { bytes(std::ptr::null(), 0, "op", "needle") }.unwrap();
        assert!(s.is_empty());
        // SAFETY: NULL with a length is refused before any read.
        let e = unsafe { bytes(std::ptr::null(), 3, "op", "needle") }.unwrap_err();
        assert_eq!(e.status, CONC_ERR_INVALID_ARGUMENT);
    }
}
