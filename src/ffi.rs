//! The FFI boundary: every exported function runs its body through
//! [`guard`] (or [`guard_value`] for accessors), which turns an `Err` into
//! its status and a panic into `CONC_ERR_PANIC`, recording the message for
//! `conc_last_error_message`. The pointer helpers here are the only places
//! that turn C pointers into Rust references.

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

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
        Err(payload) => record_panic(op, payload),
    }
}

/// Like [`guard`] for functions that return a value instead of a status
/// (accessors): a panic is recorded and `fallback` returned.
pub fn guard_value<T>(op: &'static str, fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            record_panic(op, payload);
            fallback
        }
    }
}

/// Records a caught panic as `op`'s error and returns `CONC_ERR_PANIC`.
/// Out of line, so that the error's buffer is no part of the hot paths'
/// stack frames.
#[cold]
#[inline(never)]
fn record_panic(op: &str, payload: Box<dyn std::any::Any + Send>) -> conc_status {
    let err = panic_error(op, payload.as_ref());
    set_last_error(&err);
    err.status
}

fn panic_error(op: &str, payload: &(dyn std::any::Any + Send)) -> Error {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic");
    Error::new(
        CONC_ERR_PANIC,
        format_args!("{op}: internal error (panic: {what}); please report it"),
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

/// A `CString` of the concatenated `parts`, which must hold no NUL byte,
/// or None when memory is short: allocating fallibly, it never aborts.
pub fn try_cstring(parts: &[&[u8]]) -> Option<std::ffi::CString> {
    let len = parts.iter().map(|p| p.len()).sum::<usize>() + 1;
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    for p in parts {
        v.extend_from_slice(p);
    }
    v.push(0);
    std::ffi::CString::from_vec_with_nul(v).ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{last_error_message, CONC_ERR_INVALID_ARGUMENT};

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
    fn bytes_accepts_empty_null() {
        // SAFETY: length 0 never dereferences.
        let s = unsafe { bytes(std::ptr::null(), 0, "op", "needle") }.unwrap();
        assert!(s.is_empty());
        // SAFETY: NULL with a length is refused before any read.
        let e = unsafe { bytes(std::ptr::null(), 3, "op", "needle") }.unwrap_err();
        assert_eq!(e.status, CONC_ERR_INVALID_ARGUMENT);
    }
}
