//! ThreadSanitizer annotations: how conc tells TSan about the
//! happens-before edges it creates (spawn → start, return → join,
//! unlock → lock, post → wait, push → pop).
//!
//! TSan instruments the program's C code but not this library, and it
//! cannot see synchronization done with conc's own futexes and atomics. So
//! each edge is announced: the releasing side calls [`release`] on an
//! address that names the edge (the mutex, the semaphore, the task), the
//! acquiring side calls [`acquire`] on the same address once it has
//! observed the release. TSan then orders everything before the one before
//! everything after the other.
//!
//! The functions `__tsan_acquire` and `__tsan_release` exist only in a
//! program linked with `-fsanitize=thread`, so they are looked up at run
//! time with `dlsym` (once; the result is cached in an atomic). In a
//! normal build the lookup finds nothing and each annotation costs one
//! relaxed load and a predictable branch.

use std::sync::atomic::{AtomicUsize, Ordering};

type Annotate = unsafe extern "C" fn(*mut libc::c_void);

/// 0: not looked up yet; 1: absent; otherwise the function's address.
static ACQUIRE: AtomicUsize = AtomicUsize::new(0);
static RELEASE: AtomicUsize = AtomicUsize::new(0);

#[cold]
fn resolve(slot: &AtomicUsize, name: &std::ffi::CStr) -> usize {
    // SAFETY: dlsym with a NUL-terminated name has no other precondition.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
    let value = if sym == 0 { 1 } else { sym };
    slot.store(value, Ordering::Relaxed);
    value
}

#[inline]
fn call(slot: &AtomicUsize, name: &std::ffi::CStr, addr: *const ()) {
    let mut f = slot.load(Ordering::Relaxed);
    if f == 1 {
        return;
    }
    if f == 0 {
        f = resolve(slot, name);
        if f == 1 {
            return;
        }
    }
    // SAFETY: f is the address dlsym returned for this TSan entry point,
    // whose signature is `void (void *addr)`.
    let annotate = unsafe { std::mem::transmute::<usize, Annotate>(f) };
    // SAFETY: TSan only records the address; it never dereferences it.
    unsafe { annotate(addr as *mut libc::c_void) };
}

/// Announces that everything this thread did so far happens before what
/// a later [`acquire`] of `addr` is followed by.
#[inline]
pub fn release(addr: *const ()) {
    call(&RELEASE, c"__tsan_release", addr);
}

/// Announces that this thread has observed the [`release`]s of `addr`.
#[inline]
pub fn acquire(addr: *const ()) {
    call(&ACQUIRE, c"__tsan_acquire", addr);
}

/// Whether the program runs under ThreadSanitizer.
pub fn active() -> bool {
    let mut f = ACQUIRE.load(Ordering::Relaxed);
    if f == 0 {
        f = resolve(&ACQUIRE, c"__tsan_acquire");
    }
    f != 1
}

#[cfg(test)]
mod tests {
    #[test]
    fn absent_outside_tsan() {
        assert!(!super::active());
        let x = 5u32;
        super::release(std::ptr::addr_of!(x).cast());
        super::acquire(std::ptr::addr_of!(x).cast());
    }
}
