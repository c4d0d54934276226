//! No SIGBUS from conc's own reads of a map whose file shrank.
//!
//! Touching a page of a file mapping that lies wholly past the file's end
//! (another process truncated the file) raises SIGBUS. conc's accessors
//! (`conc_mmap_readline`, `find`, `count_lines`, `read`, `write`...) must
//! return `CONC_ERR_IO` instead.
//!
//! # Design
//!
//! - Each map owns a [`Region`]: the address range of its OS mapping, the
//!   protection of its pages, and a `hit` flag.
//! - Every access conc makes to a map's pages runs inside
//!   [`Region::access`], which stores the region's address in a
//!   thread-local slot before the access and puts the previous value back
//!   after: two thread-local stores (and a load), with signal fences so the
//!   compiler keeps the accesses between them. Every thread that reads does
//!   it, including the threads `conc_mmap_count_lines` counts on.
//! - A SIGBUS handler, installed once ([`install`], on the first map),
//!   looks at that slot. When the fault is an address error (`BUS_ADRERR`)
//!   inside the slot's region, it maps a zero page over the lost page
//!   (`MAP_FIXED` anonymous, with the map's protection), sets `hit` and
//!   returns: the faulting instruction runs again on the zero page, the
//!   access finishes on zeros, and the call sees `hit` and reports
//!   `CONC_ERR_IO`. No `siglongjmp`: jumping back over the Rust frames of
//!   the memchr and bytecount kernels would not be sound, while finishing
//!   the access on zeros is.
//! - Every other SIGBUS (the program's own loads through `conc_mmap_data`,
//!   a fault outside the region, a signal sent with `kill`) goes to the
//!   handler the program had when conc installed its own: called as the
//!   kernel would call it (its `sa_mask` and `SA_NODEFER`, `SA_SIGINFO` or
//!   not, `SA_RESETHAND`), ignored for `SIG_IGN` when sent, or, for
//!   `SIG_DFL` (and `SIG_IGN` of a real fault, which the kernel never
//!   ignores), the default action is restored and the fault happens again
//!   on return (a sent signal is raised again), so the process dies of
//!   SIGBUS exactly as without conc.
//!
//! The handler is async-signal-safe: it reads atomics, calls `mmap`,
//! `sigaction`, `pthread_sigmask` and `raise`, and saves and restores
//! `errno`. The thread-local slot is a plain `#[thread_local]` word: in a
//! program linked with libconc.a, or with libconc.so at start-up, reading
//! it is a load from the thread's TLS block. (Only a libconc.so loaded
//! later with `dlopen` has lazily allocated TLS: there, a SIGBUS on a
//! thread that never called conc makes glibc allocate the slot inside the
//! handler, which glibc's `__tls_get_addr` does with `malloc`.) A program
//! that installs its own SIGBUS handler after its first map replaces conc's
//! (conc's calls then fault into it) unless it chains to the handler it
//! replaced.

use std::cell::UnsafeCell;
use std::ffi::{c_int, c_void};
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};

/// The address range of one map's OS mapping, as the SIGBUS handler sees
/// it, and whether a fault in it was repaired with zeros.
pub struct Region {
    start: AtomicUsize,
    end: AtomicUsize,
    prot: c_int,
    hit: AtomicBool,
}

thread_local! {
    /// The region the calling thread is accessing, or NULL. Const and
    /// without a destructor: a plain thread-local word, readable from a
    /// signal handler.
    static CURRENT: AtomicPtr<Region> = const { AtomicPtr::new(ptr::null_mut()) };
}

/// Puts the thread's slot back as it was when the access ends, also by a
/// panic (an access nested in a signal handler that interrupted another
/// one restores the outer one's region).
struct Restore(*mut Region);

impl Drop for Restore {
    #[inline(always)]
    fn drop(&mut self) {
        compiler_fence(Ordering::SeqCst);
        CURRENT.with(|c| c.store(self.0, Ordering::Relaxed));
    }
}

impl Region {
    /// A region with no pages yet; `prot` is what a repaired page gets.
    pub const fn new(prot: c_int) -> Region {
        Region {
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            prot,
            hit: AtomicBool::new(false),
        }
    }

    /// The OS mapping is now `len` bytes at `base` (0 bytes: none).
    pub fn set(&self, base: *mut c_void, len: usize) {
        self.start.store(base as usize, Ordering::Relaxed);
        self.end
            .store((base as usize).saturating_add(len), Ordering::Relaxed);
    }

    /// Whether a fault in this region has been repaired with zeros (the
    /// file shrank under the map): sticky, the pages stay zeros.
    #[inline(always)]
    pub fn hit(&self) -> bool {
        self.hit.load(Ordering::Relaxed)
    }

    /// Runs `f`, an access to this region's pages, with the region
    /// announced to the SIGBUS handler. Check [`Region::hit`] afterwards.
    #[inline(always)]
    pub fn access<R>(&self, f: impl FnOnce() -> R) -> R {
        let outer = CURRENT.with(|c| {
            let outer = c.load(Ordering::Relaxed);
            c.store(self as *const Region as *mut Region, Ordering::Relaxed);
            outer
        });
        compiler_fence(Ordering::SeqCst);
        let _restore = Restore(outer);
        f()
    }
}

/// The disposition conc's handler replaced, written once before conc's is
/// installed, then only read.
struct Previous(UnsafeCell<MaybeUninit<libc::sigaction>>);

// SAFETY: written once, by the thread that wins `STATE`, before the
// handler that reads it
// is installed; read-only afterwards.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous(UnsafeCell::new(MaybeUninit::uninit()));
/// Set when the previous handler had `SA_RESETHAND` and has run once: the
/// default action applies from then on.
static PREVIOUS_RESET: AtomicBool = AtomicBool::new(false);
static PAGE: AtomicUsize = AtomicUsize::new(4096);
/// 0: not installed; 1: being installed by some thread; 2: done (or
/// failed: conc's calls then keep mmap's plain behaviour).
static STATE: AtomicU8 = AtomicU8::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs conc's SIGBUS handler, once per process (on the first map).
///
/// Not a `Once`: a raw `fork()` while another thread installs would leave
/// the child's `Once` held for ever, and every map of the child blocked.
/// Here the loser of the race waits a bounded time, then goes on (in such
/// a child, without the protection, as before 0.2).
pub fn install() {
    if STATE.load(Ordering::Acquire) == 2 {
        return;
    }
    if STATE
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire)
        .is_err()
    {
        for _ in 0..10_000 {
            if STATE.load(Ordering::Acquire) == 2 {
                return;
            }
            std::thread::yield_now();
        }
        return;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        PAGE.store(page as usize, Ordering::Relaxed);
    }
    // SAFETY: PREVIOUS is written here only (STATE makes this thread the
    // only writer), before our handler, its only reader, is installed;
    // sigaction with a NULL new action only reads the current one.
    unsafe {
        let previous = (*PREVIOUS.0.get()).as_mut_ptr();
        if libc::sigaction(libc::SIGBUS, ptr::null(), previous) == 0 {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            // SA_ONSTACK: on the thread's alternate stack when it has one;
            // the previous handler's SA_RESTART, so that a SIGBUS sent to
            // the process interrupts system calls as it did before.
            action.sa_flags =
                libc::SA_SIGINFO | libc::SA_ONSTACK | ((*previous).sa_flags & libc::SA_RESTART);
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGBUS, &action, ptr::null_mut()) == 0 {
                INSTALLED.store(true, Ordering::Relaxed);
            }
        }
    }
    STATE.store(2, Ordering::Release);
}

/// Whether conc's handler was installed (for tests).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

extern "C" fn on_sigbus(sig: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: errno is the calling thread's; restored before returning so
    // that the interrupted code never sees our calls' errno.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    if !(unsafe { repair(info) }) {
        // SAFETY: forwarding the kernel's arguments.
        unsafe { chain(sig, info, context) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Replaces the lost page with zeros if the fault is inside the region the
/// thread is accessing. Returns whether it did.
///
/// # Safety
/// `info` is NULL or the siginfo of a SIGBUS delivered to this thread.
unsafe fn repair(info: *mut libc::siginfo_t) -> bool {
    if info.is_null() {
        return false;
    }
    let region = CURRENT.with(|c| c.load(Ordering::Relaxed));
    if region.is_null() {
        return false;
    }
    // SAFETY: the slot is set only while `access` runs on this thread,
    // whose region outlives it; `info` is valid per the contract.
    let (region, code, addr) = unsafe { (&*region, (*info).si_code, (*info).si_addr() as usize) };
    let start = region.start.load(Ordering::Relaxed);
    let end = region.end.load(Ordering::Relaxed);
    if code != libc::BUS_ADRERR || addr < start || addr >= end {
        return false;
    }
    let page = PAGE.load(Ordering::Relaxed);
    let at = addr & !(page - 1);
    // SAFETY: `at` is the page holding `addr`, inside the map's own OS
    // mapping (start is page aligned and addr < end): replacing it with a
    // zero page changes only memory the map owns.
    let p = unsafe {
        libc::mmap(
            at as *mut c_void,
            page,
            region.prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    region.hit.store(true, Ordering::Relaxed);
    true
}

/// Hands the signal to the disposition conc replaced.
///
/// # Safety
/// Called from the SIGBUS handler with the kernel's arguments.
unsafe fn chain(sig: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: PREVIOUS was written before this handler was installed.
    let previous = unsafe { (*PREVIOUS.0.get()).assume_init_ref() };
    let handler = previous.sa_sigaction;
    // A fault raised by the kernel (si_code > 0) comes back when the
    // handler returns; a signal sent by kill/raise does not.
    // SAFETY: info is NULL or valid.
    let fault = !info.is_null() && unsafe { (*info).si_code } > 0;
    if handler == libc::SIG_DFL
        || (handler == libc::SIG_IGN && fault)
        || PREVIOUS_RESET.load(Ordering::Relaxed)
    {
        // SAFETY: a zeroed sigaction with SIG_DFL is a valid disposition.
        unsafe {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &default, ptr::null_mut());
            if !fault {
                // Blocked while this handler runs: delivered, with the
                // default action, when it returns.
                libc::raise(sig);
            }
        }
        return;
    }
    if handler == libc::SIG_IGN {
        return;
    }
    if previous.sa_flags & libc::SA_RESETHAND != 0 {
        PREVIOUS_RESET.store(true, Ordering::Relaxed);
    }
    // Block what the kernel would have blocked for that handler.
    // SAFETY: sigset operations on local sets; pthread_sigmask is
    // async-signal-safe.
    unsafe {
        let mut old_mask: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, ptr::null(), &mut old_mask);
        let mut mask = old_mask;
        for s in 1..65 {
            if libc::sigismember(&previous.sa_mask, s) == 1 {
                libc::sigaddset(&mut mask, s);
            }
        }
        if previous.sa_flags & libc::SA_NODEFER != 0 {
            libc::sigdelset(&mut mask, sig);
        } else {
            libc::sigaddset(&mut mask, sig);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &mask, ptr::null_mut());
        if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                std::mem::transmute(handler);
            f(sig, info, context);
        } else {
            let f: extern "C" fn(c_int) = std::mem::transmute(handler);
            f(sig);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, ptr::null_mut());
    }
}
