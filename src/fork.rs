//! Fork safety for every `fork()`, not only conc's own.
//!
//! Only the forking thread exists in a forked child, so a lock that any
//! other thread held at the fork stays locked there for ever, and the
//! child's first conc call that needs it never returns. conc therefore
//! registers `pthread_atfork` handlers once, as glibc does for malloc and
//! stdio:
//!
//! - *prepare* completes conc's lazy initialisations (a `OnceLock` under
//!   way in another thread at the fork would stay "under way" in the child
//!   for ever), then takes every process-local conc lock in one fixed
//!   order: the pool's locks ([`crate::pool::fork_prepare`]), the thread
//!   registry, the handle table, the registry of child processes. Every
//!   other path takes at most a suffix of that order, so prepare cannot
//!   deadlock with it;
//! - *parent* releases them in reverse order;
//! - *child* resets what the child must not inherit (the registry of
//!   children, which are its siblings; the threads, which do not exist
//!   there; the pool's workers) and releases the locks. It only stores to
//!   memory it owns and closes descriptors: it neither allocates nor waits.
//!
//! `conc_process_spawn` relies on the same handlers instead of taking the
//! locks itself. The guards taken by prepare are kept in [`Held`] slots
//! until parent or child: those run on the same thread, and the locks
//! themselves keep any other fork out of the slots meanwhile.
//!
//! Registration is lazy: at the first thread spawn, handle creation (maps,
//! segments, lists, pools, queues) and process spawn, i.e. before any of
//! those locks is first used. `pthread_atfork` and `fork` serialise on
//! glibc's own lock, so a fork either runs all three handlers or none; the
//! registration state is a pid, not a `Once`, so that a child forked while
//! another thread was registering does not wait for ever on the parent's
//! "under way".
//!
//! `_Fork`, `vfork`, `clone` and the raw `fork`/`clone3` system calls skip
//! `pthread_atfork` handlers, so this protects `fork()` (and `system`,
//! `popen` and `posix_spawn`, which exec at once) only.

use std::cell::UnsafeCell;
use std::mem::{align_of, size_of, MaybeUninit};
use std::sync::atomic::{AtomicI32, Ordering};

/// The registration state: 0 not registered, [`DONE`], or the pid of the
/// process in which a thread is registering right now.
static STATE: AtomicI32 = AtomicI32::new(0);
const DONE: i32 = -1;

/// Registers conc's `pthread_atfork` handlers, once per process image.
/// Cheap after the first call (one load).
pub(crate) fn ensure_registered() {
    if STATE.load(Ordering::Acquire) != DONE {
        register_slow();
    }
}

/// Whether the handlers are registered (for tests).
#[cfg(test)]
pub(crate) fn registered() -> bool {
    STATE.load(Ordering::Acquire) == DONE
}

#[cold]
fn register_slow() {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    loop {
        let s = STATE.load(Ordering::Acquire);
        if s == DONE {
            return;
        }
        if s == me {
            // Another thread of this process is registering: a few
            // microseconds.
            std::thread::yield_now();
            continue;
        }
        // 0, or the pid of a parent that was registering when this process
        // was forked: then the fork ran no handler of ours (it would have
        // marked this process DONE), so this process registers its own.
        if STATE
            .compare_exchange(s, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: the handlers are plain functions that live as long as
            // the program (conc is never unloaded while in use).
            let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
            // On ENOMEM a later call tries again; meanwhile only raw forks
            // are unprotected.
            STATE.store(if rc == 0 { DONE } else { 0 }, Ordering::Release);
            return;
        }
    }
}

extern "C" fn prepare() {
    crate::thread::init_lazy_statics();
    crate::mmap::init_lazy_statics();
    crate::pool::fork_prepare();
    crate::thread::fork_lock();
    // SAFETY: only prepare puts and only parent/child take, on this thread;
    // the table lock keeps other forks out until then.
    unsafe { TABLE.put(crate::handle::lock_table()) };
    crate::process::fork_lock();
}

extern "C" fn parent() {
    crate::process::fork_unlock(false);
    // SAFETY: as in prepare.
    unsafe { TABLE.release() };
    crate::thread::fork_unlock(false);
    crate::pool::fork_parent();
}

extern "C" fn child() {
    // Handlers ran, so they are registered here too (this matters when
    // another thread of the parent was registering them at the fork).
    STATE.store(DONE, Ordering::Release);
    crate::process::fork_unlock(true);
    // SAFETY: as in prepare.
    unsafe { TABLE.release() };
    crate::thread::fork_unlock(true);
    crate::pool::fork_child();
}

/// The handle table's guard, whose type `handle` does not name.
static TABLE: Held = Held::new();

/// A slot for one lock guard from prepare to parent or child: the bytes of
/// the guard and the function that drops it (no allocation).
pub(crate) struct Held {
    bytes: UnsafeCell<MaybeUninit<[usize; 4]>>,
    drop: UnsafeCell<Option<unsafe fn(*mut u8)>>,
}

// SAFETY: used only between a fork's prepare handler and its parent/child
// handler, on the forking thread, while the held lock keeps every other
// fork (and so every other user of the slot) out.
unsafe impl Sync for Held {}

struct Fits<T>(std::marker::PhantomData<T>);
impl<T> Fits<T> {
    const OK: () = assert!(size_of::<T>() <= size_of::<[usize; 4]>() && align_of::<T>() <= 8);
}

/// Drops the `T` at `p`.
///
/// # Safety
/// `p` holds a live `T` that is not used afterwards.
unsafe fn drop_as<T>(p: *mut u8) {
    // SAFETY: per the contract.
    unsafe { std::ptr::drop_in_place(p.cast::<T>()) }
}

impl Held {
    pub(crate) const fn new() -> Held {
        Held {
            bytes: UnsafeCell::new(MaybeUninit::uninit()),
            drop: UnsafeCell::new(None),
        }
    }

    /// Keeps `guard` until [`Held::release`].
    ///
    /// # Safety
    /// Called by the prepare handler only, with the slot empty.
    pub(crate) unsafe fn put<T>(&self, guard: T) {
        #[allow(clippy::let_unit_value)]
        let () = Fits::<T>::OK;
        // SAFETY: the buffer is large and aligned enough (checked at
        // compile time) and nobody else uses the slot now.
        unsafe {
            self.bytes.get().cast::<T>().write(guard);
            *self.drop.get() = Some(drop_as::<T>);
        }
    }

    /// Drops the kept guard (unlocking its lock), if any.
    ///
    /// # Safety
    /// Called by the parent or child handler only.
    pub(crate) unsafe fn release(&self) {
        // SAFETY: the slot is ours (see put); drop is set exactly when the
        // bytes hold a guard.
        unsafe {
            if let Some(drop) = (*self.drop.get()).take() {
                drop(self.bytes.get().cast::<u8>());
            }
        }
    }
}

/// A typed slot for a lock guard from prepare to parent or child, for the
/// modules whose child handler changes the data before unlocking.
pub(crate) struct Slot<T>(UnsafeCell<Option<T>>);

// SAFETY: as for Held: one forking thread at a time, kept out by the lock.
unsafe impl<T> Sync for Slot<T> {}

impl<T> Slot<T> {
    pub(crate) const fn new() -> Slot<T> {
        Slot(UnsafeCell::new(None))
    }

    /// # Safety
    /// Called by the prepare handler only.
    pub(crate) unsafe fn put(&self, guard: T) {
        // SAFETY: see the Sync impl.
        unsafe { *self.0.get() = Some(guard) };
    }

    /// # Safety
    /// Called by the parent or child handler only.
    pub(crate) unsafe fn take(&self) -> Option<T> {
        // SAFETY: see the Sync impl.
        unsafe { (*self.0.get()).take() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A plain fork() while another thread holds a conc lock: the prepare
    /// handler waits for it, so the child finds it free. Without the
    /// handlers the child would block for ever (the alarm kills it).
    #[test]
    fn a_raw_fork_never_inherits_a_held_conc_lock() {
        ensure_registered();
        assert!(registered());
        let (tx, rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let table = crate::handle::lock_table();
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            drop(table);
        });
        rx.recv().unwrap();
        // SAFETY: the child only takes the lock, then _exits; alarm ends it
        // if the lock was inherited held.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: alarm and _exit are async-signal-safe.
            unsafe { libc::alarm(5) };
            drop(crate::handle::lock_table());
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        assert!(pid > 0);
        let mut status = 0;
        // SAFETY: plain waitpid.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
        holder.join().unwrap();
    }
}
