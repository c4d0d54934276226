//! Child processes: a fork of the caller that runs one C function and
//! exits with its result, the counterpart of Python's `mp.Process` with the
//! fork start method.
//!
//! Fork safety. Only the forking thread exists in the child, so every lock
//! another thread held at the fork would stay locked there for ever. conc's
//! `pthread_atfork` handlers (see `fork.rs`) take all of conc's locks
//! before every `fork()`, this one included, and release them on both
//! sides; they also complete conc's lazy initialisations first. Between
//! the fork and `fn` the child does nothing that waits: it discards the
//! stdio output buffers it copied (`__fpurge`), registers its exit handler
//! and switches to a fresh stack.
//!
//! Pidfds. Right after the fork the parent opens a pidfd for the child
//! (`pidfd_open`, Linux 5.3) and keeps it until the join. It names that one
//! process for ever, whatever happens to its pid, so: `conc_process_kill`
//! signals through it (`pidfd_send_signal`, 5.1) and never reaches a
//! stranger that reuses the pid; `conc_process_fd` hands it out for
//! `poll`; joining waits on it and reaps through it (`waitid(P_PIDFD)`,
//! 5.4), so a child reaped behind conc's back gives ECHILD instead of the
//! status of whatever process has its pid now. Each call is detected at
//! run time (ENOSYS, or EINVAL for `P_PIDFD`); without it conc falls back
//! to the pid, which is safe as long as nobody else reaps conc's children:
//! a child that has not been joined stays a zombie and keeps its pid.
//!
//! Joining waits without reaping (`poll` on the pidfd, or `waitid` with
//! `WNOWAIT`), then reaps and forgets the child in one step under the
//! registry's lock; `kill` signals under the same lock. So a pid-based
//! fallback never signals a pid after conc reaped it.
//!
//! The child's end. `fn` runs on a fresh stack whose bottom frame ends
//! the unwind information (`makecontext`), and an `on_exit` handler
//! registered in the child before `fn` runs first at any `exit`: it flushes
//! stdio and `_exit`s with the status, so the parent's `atexit` handlers
//! never run. `pthread_exit` in `fn` unwinds `fn`'s frames only: at the end
//! of that stack glibc jumps (without unwinding) to the thread's exit path,
//! which, this being the process's last thread, calls `exit(0)`, and so
//! reaches the same handler. Without the fresh stack the unwind would cross
//! conc's frames and abort the child.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{
    conc_status, errno, Error, Result, CONC_ERR_INVALID_ARGUMENT, CONC_ERR_INVALID_STATE,
    CONC_ERR_RESOURCE_EXHAUSTED, CONC_ERR_TIMED_OUT,
};
use crate::ffi::{guard, guard_value, opt_out_ref, out_ref};
use crate::sync::futex::Deadline;

/// A child process made by `conc_process_spawn`: a small copyable value,
/// like `pid_t`. `pid` is the child's process id (0 is never a valid
/// handle). Joining a zeroed, forged or already joined handle, or a copy of
/// one, is refused with `CONC_ERR_INVALID_STATE`.
///
/// The handle holds only the pid. conc keeps a pidfd for each child until
/// it is joined, so no call ever reaches a process that conc did not spawn;
/// but once a child is joined, its pid may be given to a later child of
/// `conc_process_spawn`, and a stale copy of the old handle then names
/// that new child. Join each child once and drop its copies.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct conc_process {
    /// The child's process id, e.g. for `kill(2)`.
    pub pid: i64,
}

/// The function a child process runs: its return value, modulo 256, is
/// the child's exit status.
#[allow(non_camel_case_types)]
pub type conc_process_fn = Option<unsafe extern "C" fn(arg: *mut c_void) -> c_int>;

/// A child spawned by this process and not joined yet.
struct Child {
    pid: i64,
    /// The pidfd held since the fork, or -1 (no pidfd on this kernel, or
    /// out of descriptors): then the pid is used.
    pidfd: c_int,
    /// Reaped by someone else before conc could open its pidfd: its pid
    /// may already be a stranger's, so it is never used again.
    lost: bool,
    /// A thread is joining it now: other joins are refused.
    joining: bool,
}

/// The children spawned by this process and not joined yet. A Vec: there
/// are few, and it keeps its capacity.
static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// The registry of children, locked; the guard announces the unlock → lock
/// edge to ThreadSanitizer (see `thread.rs`).
struct ChildrenGuard(MutexGuard<'static, Vec<Child>>);

impl std::ops::Deref for ChildrenGuard {
    type Target = Vec<Child>;
    fn deref(&self) -> &Vec<Child> {
        &self.0
    }
}

impl std::ops::DerefMut for ChildrenGuard {
    fn deref_mut(&mut self) -> &mut Vec<Child> {
        &mut self.0
    }
}

impl Drop for ChildrenGuard {
    fn drop(&mut self) {
        crate::tsan::release(std::ptr::addr_of!(CHILDREN).cast());
    }
}

fn lock_children() -> ChildrenGuard {
    let guard = CHILDREN.lock().unwrap_or_else(PoisonError::into_inner);
    crate::tsan::acquire(std::ptr::addr_of!(CHILDREN).cast());
    ChildrenGuard(guard)
}

static FORK_HELD: crate::fork::Slot<ChildrenGuard> = crate::fork::Slot::new();

/// The fork prepare handler's part: takes the children's registry.
pub(crate) fn fork_lock() {
    let guard = lock_children();
    // SAFETY: called by the prepare handler only.
    unsafe { FORK_HELD.put(guard) };
}

/// The parent and child handlers' part. The child's copy of the registry
/// lists its siblings, which are not its children: their pidfds are
/// closed and the list emptied (keeping its buffer: no allocation).
pub(crate) fn fork_unlock(in_child: bool) {
    // SAFETY: called by the parent or child handler only.
    if let Some(mut children) = unsafe { FORK_HELD.take() } {
        if in_child {
            for c in children.iter() {
                if c.pidfd >= 0 {
                    // SAFETY: the child's own copy of a descriptor conc owns.
                    unsafe { libc::close(c.pidfd) };
                }
            }
            children.clear();
        }
    }
}

// Which pidfd calls the kernel has: 0 not known yet, 1 yes, 2 no.
static HAVE_PIDFD_OPEN: AtomicU8 = AtomicU8::new(0);
static HAVE_PIDFD_SEND_SIGNAL: AtomicU8 = AtomicU8::new(0);
static HAVE_WAITID_PIDFD: AtomicU8 = AtomicU8::new(0);
const YES: u8 = 1;
const NO: u8 = 2;

#[cfg(test)]
thread_local! {
    /// Tests of the fallbacks: kernel features this thread pretends to lack
    /// (bits: 1 pidfd_open, 2 pidfd_send_signal, 4 waitid(P_PIDFD)).
    static PRETEND_MISSING: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

fn missing(bit: u8, known: &AtomicU8) -> bool {
    #[cfg(test)]
    if PRETEND_MISSING.with(|p| p.get()) & bit != 0 {
        return true;
    }
    let _ = bit;
    known.load(Ordering::Relaxed) == NO
}

/// Opens a pidfd for the child `pid` that fork just returned, and checks
/// that it names that child: -1 if the kernel has no `pidfd_open`, or on
/// any failure (the pid is used then). `Err(())` when the child was reaped
/// by someone else already, so the pid may name a stranger.
fn open_pidfd(pid: libc::pid_t) -> std::result::Result<c_int, ()> {
    if missing(1, &HAVE_PIDFD_OPEN) {
        return Ok(-1);
    }
    // SAFETY: pidfd_open(pid, 0) takes no pointers; the fd is O_CLOEXEC.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as c_int;
    if fd < 0 {
        return match errno() {
            libc::ENOSYS => {
                HAVE_PIDFD_OPEN.store(NO, Ordering::Relaxed);
                Ok(-1)
            }
            // No such process: it was reaped already.
            libc::ESRCH => Err(()),
            _ => Ok(-1),
        };
    }
    HAVE_PIDFD_OPEN.store(YES, Ordering::Relaxed);
    // Is it our child, running or a zombie? A child reaped behind conc's
    // back whose pid went to a stranger in between gives ECHILD.
    if !missing(4, &HAVE_WAITID_PIDFD) {
        // SAFETY: info is valid for writes.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above; WNOWAIT reaps nothing.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                fd as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r < 0 {
            match errno() {
                libc::EINVAL => HAVE_WAITID_PIDFD.store(NO, Ordering::Relaxed),
                libc::ECHILD => {
                    // SAFETY: fd is ours.
                    unsafe { libc::close(fd) };
                    return Err(());
                }
                _ => {}
            }
        } else {
            HAVE_WAITID_PIDFD.store(YES, Ordering::Relaxed);
        }
    }
    Ok(fd)
}

extern "C" {
    // glibc <stdio_ext.h>: discard a stream's buffered data, without
    // taking its lock. Not in the libc crate.
    fn __fpurge(stream: *mut libc::FILE);
    static stdout: *mut libc::FILE;
    static stderr: *mut libc::FILE;
    // glibc <stdlib.h>: like atexit, with the exit status. Not in libc.
    fn on_exit(
        func: Option<unsafe extern "C" fn(status: c_int, arg: *mut c_void)>,
        arg: *mut c_void,
    ) -> c_int;
}

/// The child's `exit` handler, registered after every handler the parent
/// had, so it runs first: the child's own stdio is flushed, and the
/// parent's handlers are skipped.
unsafe extern "C" fn child_exit(status: c_int, _: *mut c_void) {
    // SAFETY: flushing every stream, then ending the process.
    unsafe {
        libc::fflush(std::ptr::null_mut());
        libc::_exit(status & 0xff)
    }
}

/// `fn` and `arg` for [`child_start`]: the child has one thread, and they
/// are written before it switches stacks.
static CHILD_FN: AtomicUsize = AtomicUsize::new(0);
static CHILD_ARG: AtomicUsize = AtomicUsize::new(0);

/// The bottom frame of the child's fresh stack. "C-unwind" and nothing to
/// drop, so `pthread_exit` in `fn` may unwind through it.
extern "C-unwind" fn child_start() {
    let f = CHILD_FN.load(Ordering::Relaxed);
    let arg = CHILD_ARG.load(Ordering::Relaxed) as *mut c_void;
    // SAFETY: run_child stored a `unsafe extern "C" fn(*mut c_void) -> c_int`.
    let f = unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void) -> c_int>(f) };
    // SAFETY: f and arg are what the caller of conc_process_spawn gave.
    let code = unsafe { f(arg) };
    // SAFETY: flushing every stream, then ending without atexit handlers.
    unsafe {
        libc::fflush(std::ptr::null_mut());
        libc::_exit(code & 0xff)
    }
}

/// A fresh stack for `fn`, as large as the main thread's limit (8 MiB if
/// unlimited or unknown), reserved lazily, with a guard page at its end.
fn child_stack() -> Option<(*mut c_void, usize)> {
    const PAGE: usize = 4096;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is valid for writes.
    let size = if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut lim) } == 0
        && lim.rlim_cur != libc::RLIM_INFINITY
        && lim.rlim_cur >= 64 * 1024
    {
        (lim.rlim_cur as usize).min(1 << 30)
    } else {
        8 << 20
    };
    let size = size.next_multiple_of(PAGE);
    // SAFETY: a fresh private anonymous mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size + PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the lowest page of the mapping just made. Without the guard
    // page an overflow would still fault on whatever is below, usually.
    unsafe { libc::mprotect(p, PAGE, libc::PROT_NONE) };
    // SAFETY: within the mapping.
    Some((unsafe { p.cast::<u8>().add(PAGE) }.cast(), size))
}

/// The child's side of `conc_process_spawn`: never returns.
///
/// # Safety
/// Called only in a freshly forked child, with `f` and `arg` as the caller
/// of `conc_process_spawn` passed them.
unsafe fn run_child(f: unsafe extern "C" fn(*mut c_void) -> c_int, arg: *mut c_void) -> ! {
    // The parent flushed stdio before the fork, but another of its threads
    // may have buffered output since: that output is the parent's to
    // print, so the child's copy is dropped, never printed twice.
    // SAFETY: stdout/stderr are glibc's standard streams; __fpurge only
    // resets buffer pointers, and no other thread exists here.
    unsafe {
        __fpurge(stdout);
        __fpurge(stderr);
    }
    // SAFETY: child_exit is a valid on_exit handler. If registering fails
    // (no memory), an exit() in fn runs the parent's handlers: nothing
    // better can be done.
    unsafe { on_exit(Some(child_exit), std::ptr::null_mut()) };
    CHILD_FN.store(f as usize, Ordering::Relaxed);
    CHILD_ARG.store(arg as usize, Ordering::Relaxed);
    if let Some((stack, size)) = child_stack() {
        // SAFETY: ctx is initialised by getcontext before makecontext uses
        // it; the stack is ours; child_start never returns, so uc_link is
        // never followed. setcontext returns only on failure.
        unsafe {
            let mut ctx: libc::ucontext_t = std::mem::zeroed();
            if libc::getcontext(&mut ctx) == 0 {
                ctx.uc_stack.ss_sp = stack;
                ctx.uc_stack.ss_size = size;
                ctx.uc_stack.ss_flags = 0;
                ctx.uc_link = std::ptr::null_mut();
                let start =
                    std::mem::transmute::<extern "C-unwind" fn(), extern "C" fn()>(child_start);
                libc::makecontext(&mut ctx, start, 0);
                libc::setcontext(&ctx);
            }
        }
    }
    // No fresh stack: run fn here (a pthread_exit in fn then aborts).
    child_start();
    // SAFETY: child_start never returns; this is unreachable.
    unsafe { libc::_exit(0) }
}

/// Starts a child process: a fork of the caller that runs `fn(arg)`,
/// flushes its stdio, and ends with `_exit(fn's return value & 0xff)`.
///
/// The parent's `atexit` handlers never run in the child: if `fn` calls
/// `exit(status)`, a handler that the child registered before `fn` runs
/// first, flushes stdio and ends the child with `_exit(status & 0xff)`
/// (handlers that `fn` itself registered run before it). If `fn` calls
/// `pthread_exit`, the child ends with status 0, stdio flushed, and no
/// `atexit` handler runs either (`fn` runs on a fresh stack as large as
/// the main thread's, so that `pthread_exit`'s unwind never crosses the
/// caller's or conc's frames).
///
/// The child sees the caller's memory as it was at the call and shares
/// every `conc_shm` and `conc_list` mapping and anonymous `conc_mmap` with
/// it; its other memory is a private copy. Only the calling thread exists
/// in the child. The child never inherits one of conc's own locks locked
/// (conc's `pthread_atfork` handlers take them around every `fork()`), so
/// conc calls in the child never deadlock; locks of other libraries held
/// by other threads at that moment may stay locked in the child, as with
/// any `fork` (glibc's malloc and stdio are safe). stdio output buffered
/// before the call is flushed first and printed once, by the parent, even
/// if another thread writes more to `stdout` or `stderr` while the fork
/// happens; output that another thread buffers in any other stream at that
/// very moment may be written by the child as well.
///
/// The same handlers protect every plain `fork()` of the program (or of a
/// library it uses), so a raw child may call conc too. `_Fork`, `vfork`,
/// `clone` and the raw system calls skip `pthread_atfork` handlers: a child
/// made by one of them must not call conc (it may `exec`).
///
/// conc holds a pidfd for the child from right after the fork until the
/// join (Linux 5.3 and later), so `conc_process_kill` and the join never
/// reach another process that got the same pid. If the program reaps
/// children itself (SIGCHLD set to `SIG_IGN`, or `waitpid(-1, ...)` in
/// another thread), a child that ends at once may be reaped before conc
/// opens its pidfd; conc notices it (the pidfd is not its child's) and the
/// handle then only ever gives `CONC_ERR_INVALID_STATE` from the join, -1
/// from `conc_process_fd`, and `CONC_OK` without a signal from
/// `conc_process_kill`. On kernels without pidfd, and in such a program,
/// a pid reaped elsewhere and reused can be reached: do not reap conc's
/// children yourself.
///
/// On success `*out` is the child's handle, to be joined once with
/// `conc_process_join` (an unjoined child stays a zombie until this
/// process exits). On failure `*out` is the zero handle.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`out` or `fn` NULL),
/// `CONC_ERR_RESOURCE_EXHAUSTED` (the OS is out of processes or memory).
///
/// # Safety
/// `out` must be NULL or valid for writes; `fn` must be safe to call with
/// `arg` in the child.
#[no_mangle]
pub unsafe extern "C" fn conc_process_spawn(
    out: *mut conc_process,
    r#fn: conc_process_fn,
    arg: *mut c_void,
) -> conc_status {
    const OP: &str = "conc_process_spawn";
    guard(OP, || {
        // SAFETY: out is NULL or valid for writes (caller contract).
        let out = unsafe { out_ref(out, OP, "out") }?;
        *out = conc_process { pid: 0 };
        let f = r#fn.ok_or_else(|| Error::null(OP, "fn"))?;
        // The atfork handlers take conc's locks around the fork and
        // complete its lazy initialisations before it.
        crate::fork::ensure_registered();
        lock_children().try_reserve(1).map_err(|_| {
            Error::os(format_args!("{OP}: no memory"), libc::ENOMEM)
                .with_status(CONC_ERR_RESOURCE_EXHAUSTED)
        })?;

        // Output buffered so far is printed once, by the parent. Done
        // before the fork: a flush may block on a pipe.
        // SAFETY: fflush(NULL) flushes every output stream.
        unsafe { libc::fflush(std::ptr::null_mut()) };

        // SAFETY: fork is safe to call; the child only runs run_child.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: this is the freshly forked child; f and arg are the
            // caller's.
            unsafe { run_child(f, arg) }
        }
        if pid < 0 {
            return Err(Error::os(format_args!("{OP}: fork"), errno()));
        }
        let (pidfd, lost) = match open_pidfd(pid) {
            Ok(fd) => (fd, false),
            Err(()) => (-1, true),
        };
        let child = Child {
            pid: i64::from(pid),
            pidfd,
            lost,
            joining: false,
        };
        let mut children = lock_children();
        if children.try_reserve(1).is_err() {
            drop(children);
            // SAFETY: pid is our unjoined child, so it is still its pid.
            unsafe {
                if pidfd >= 0 {
                    libc::syscall(libc::SYS_pidfd_send_signal, pidfd, libc::SIGKILL, 0, 0);
                    libc::close(pidfd);
                } else if !lost {
                    libc::kill(pid, libc::SIGKILL);
                }
                if !lost {
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
            return Err(Error::os(format_args!("{OP}: no memory"), libc::ENOMEM)
                .with_status(CONC_ERR_RESOURCE_EXHAUSTED));
        }
        children.push(child);
        drop(children);
        *out = conc_process {
            pid: i64::from(pid),
        };
        Ok(())
    })
}

/// The exit code of a `waitid` result: the status, or 128 + the signal.
fn exit_code(info: &libc::siginfo_t) -> c_int {
    // SAFETY: waitid filled a SIGCHLD siginfo.
    let status = unsafe { info.si_status() };
    if info.si_code == libc::CLD_EXITED {
        status & 0xff
    } else {
        128 + status
    }
}

/// Waits, without reaping, until the child has ended or `deadline` passes:
/// `Ok(true)` if it ended (or was reaped by someone else: the reap will
/// say), `Ok(false)` on time-out.
fn wait_ended(pid: libc::pid_t, pidfd: c_int, deadline: Deadline) -> std::io::Result<bool> {
    if pidfd >= 0 {
        loop {
            let ms = match deadline.remaining_ms() {
                None => -1,
                Some(ms) => ms.min(i32::MAX as u64) as c_int,
            };
            let mut p = libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: p is one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r > 0 {
                return Ok(true);
            }
            if r < 0 && errno() != libc::EINTR {
                return Err(std::io::Error::last_os_error());
            }
            if r == 0 && deadline.expired() {
                return Ok(false);
            }
        }
    }
    // No pidfd: the pid, which is still this child's until it is reaped.
    let mut pause_ms = 1;
    loop {
        // SAFETY: info is valid for writes.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED
            | libc::WNOWAIT
            | if deadline.is_never() {
                0
            } else {
                libc::WNOHANG
            };
        // SAFETY: as above.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if r < 0 {
            match errno() {
                libc::EINTR => continue,
                libc::ECHILD => return Ok(true),
                _ => return Err(std::io::Error::last_os_error()),
            }
        }
        // SAFETY: waitid succeeded.
        if unsafe { info.si_pid() } != 0 {
            return Ok(true);
        }
        if deadline.expired() {
            return Ok(false);
        }
        let ms = deadline.remaining_ms().unwrap_or(pause_ms).min(pause_ms);
        std::thread::sleep(std::time::Duration::from_millis(ms.max(1)));
        pause_ms = (pause_ms * 2).min(10);
    }
}

/// Reaps an ended child, through its pidfd if it has one. Called under
/// the registry's lock: never blocks (the child has ended).
fn reap(pid: libc::pid_t, pidfd: c_int) -> std::result::Result<c_int, i32> {
    // SAFETY: info is valid for writes.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        let r = if pidfd >= 0 && !missing(4, &HAVE_WAITID_PIDFD) {
            // SAFETY: as above.
            let r = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    pidfd as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG,
                )
            };
            if r < 0 && errno() == libc::EINVAL {
                HAVE_WAITID_PIDFD.store(NO, Ordering::Relaxed);
                continue;
            }
            r
        } else {
            // SAFETY: as above.
            unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG,
                )
            }
        };
        if r < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid succeeded.
        if unsafe { info.si_pid() } == 0 {
            // Not ended after all (cannot happen after wait_ended): wait.
            std::thread::yield_now();
            continue;
        }
        return Ok(exit_code(&info));
    }
}

fn not_joinable(call: &str, joining: bool) -> Error {
    Error::new(
        CONC_ERR_INVALID_STATE,
        if joining {
            format!("{call}: another thread is joining this child")
        } else {
            format!(
                "{call}: not a child of conc_process_spawn waiting to be joined \
                 (joined already, or never spawned)"
            )
        },
    )
}

/// The body of both joins.
fn join(op: &str, process: conc_process, timeout: Option<u64>) -> Result<c_int> {
    let pid = process.pid;
    let call = || format!("{op}(pid {pid})");
    let deadline = Deadline::from_timeout(timeout);
    // Claim the child: other joins are refused until this one ends.
    let (pidfd, lost) = {
        let mut children = lock_children();
        let Some(c) = children.iter_mut().find(|c| c.pid == pid && pid != 0) else {
            return Err(not_joinable(&call(), false));
        };
        if c.joining {
            return Err(not_joinable(&call(), true));
        }
        c.joining = true;
        (c.pidfd, c.lost)
    };
    let pid_t = pid as libc::pid_t;
    let waited = if lost {
        Ok(true)
    } else {
        wait_ended(pid_t, pidfd, deadline)
    };
    let mut children = lock_children();
    let i = children
        .iter()
        .position(|c| c.pid == pid && c.joining)
        .expect("a claimed child stays in the registry");
    match waited {
        Ok(false) => {
            children[i].joining = false;
            return Err(Error::new(
                CONC_ERR_TIMED_OUT,
                format!(
                    "{}: the child has not ended within {} ms",
                    call(),
                    timeout.unwrap_or(0)
                ),
            ));
        }
        Ok(true) => {}
        Err(e) => {
            children[i].joining = false;
            return Err(Error::os(call(), e.raw_os_error().unwrap_or(libc::EIO)));
        }
    }
    let result = if lost {
        Err(libc::ECHILD)
    } else {
        reap(pid_t, pidfd)
    };
    children.swap_remove(i);
    drop(children);
    if pidfd >= 0 {
        // SAFETY: the pidfd was conc's, and nobody can find it any more.
        unsafe { libc::close(pidfd) };
    }
    result.map_err(|e| {
        let err = Error::os(call(), e);
        if e == libc::ECHILD {
            err.with_status(CONC_ERR_INVALID_STATE)
        } else {
            err
        }
    })
}

/// Waits for the child `process` to end and reaps it. `*exit_code` (if
/// `exit_code` is not NULL) receives its exit status, 0-255, or 128 + the
/// signal number if a signal killed it (e.g. 137 for SIGKILL).
///
/// Each child is joined once: joining it again, joining the zero handle or
/// a handle `conc_process_spawn` did not return in this process, or two
/// threads joining one child at once (one of them succeeds) give
/// `CONC_ERR_INVALID_STATE`. The handle is the child's pid, so once it is
/// joined and the OS has recycled that pid for a later child of
/// `conc_process_spawn`, a stale copy of the old handle names the new
/// child: join each handle once. (A child that has not been joined keeps
/// its pid, as a zombie, so this cannot happen before.) If the child was
/// reaped behind conc's back (`waitpid(-1, ...)`, or SIGCHLD ignored) its
/// status is lost: `CONC_ERR_INVALID_STATE` with the OS reason (ECHILD).
/// The join waits on and reaps through the pidfd conc holds for the child
/// (Linux 5.4 and later), so it never takes the status of another process
/// that got the child's pid meanwhile (before 5.4: see
/// `conc_process_spawn`).
///
/// # Safety
/// `exit_code` must be NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn conc_process_join(
    process: conc_process,
    exit_code: *mut c_int,
) -> conc_status {
    const OP: &str = "conc_process_join";
    guard(OP, || {
        let code = join(OP, process, None)?;
        // SAFETY: exit_code is NULL or valid for writes (caller contract).
        if let Some(slot) = unsafe { opt_out_ref(exit_code) } {
            *slot = code;
        }
        Ok(())
    })
}

/// Like `conc_process_join`, but waits at most `timeout_ms` milliseconds,
/// measured on the monotonic clock: `CONC_ERR_TIMED_OUT` if the child has
/// not ended by then, and the handle stays joinable. A timeout of 0 polls
/// once: Python's `is_alive()` is `join_timeout(p, 0, NULL) ==
/// CONC_ERR_TIMED_OUT`. `UINT64_MAX` waits for ever.
///
/// While one thread is joining (even with a timeout), another thread's join
/// of the same child gets `CONC_ERR_INVALID_STATE`. Otherwise the statuses
/// are `conc_process_join`'s; `*exit_code` is written only on `CONC_OK`.
///
/// # Safety
/// `exit_code` must be NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn conc_process_join_timeout(
    process: conc_process,
    timeout_ms: u64,
    exit_code: *mut c_int,
) -> conc_status {
    const OP: &str = "conc_process_join_timeout";
    guard(OP, || {
        let code = join(OP, process, Some(timeout_ms))?;
        // SAFETY: exit_code is NULL or valid for writes (caller contract).
        if let Some(slot) = unsafe { opt_out_ref(exit_code) } {
            *slot = code;
        }
        Ok(())
    })
}

/// Sends `signal` to the child `process`, which has not been joined yet:
/// `SIGTERM` and `SIGKILL` are Python's `terminate()` and `kill()`. Signal 0
/// sends nothing: `CONC_OK` while the child has not been joined, as
/// `kill(pid, 0)` (an existence probe).
///
/// conc signals through the pidfd it holds for the child (Linux 5.1 and
/// later), so it never signals a process that it did not spawn, even one
/// that got the child's pid after someone else reaped it. A child that has
/// ended but is not joined yet is not an error: `CONC_OK`, nothing sent.
/// (The handle holds only the pid: a stale copy of a joined handle names
/// a later conc child that got the same pid, and that child is signalled.)
///
/// Returns `CONC_OK`; `CONC_ERR_INVALID_ARGUMENT` for a signal number that
/// is not one (below 0 or above `SIGRTMAX`); `CONC_ERR_INVALID_STATE` for a
/// joined, zero or forged handle, or a copy of one;
/// `CONC_ERR_PERMISSION_DENIED` if the OS refuses (EPERM).
#[no_mangle]
pub extern "C" fn conc_process_kill(process: conc_process, signal: c_int) -> conc_status {
    const OP: &str = "conc_process_kill";
    guard(OP, || {
        let pid = process.pid;
        let call = || format!("{OP}(pid {pid}, signal {signal})");
        if !(0..=libc::SIGRTMAX()).contains(&signal) {
            return Err(Error::new(
                CONC_ERR_INVALID_ARGUMENT,
                format!("{}: not a signal number", call()),
            ));
        }
        // Under the lock: a join cannot reap and forget the child meanwhile.
        let children = lock_children();
        let Some(c) = children.iter().find(|c| c.pid == pid && pid != 0) else {
            return Err(not_joinable(&call(), false));
        };
        if c.lost {
            return Ok(()); // ended, and reaped elsewhere: nothing to signal
        }
        if c.pidfd >= 0 && !missing(2, &HAVE_PIDFD_SEND_SIGNAL) {
            // SAFETY: pidfd_send_signal(fd, sig, NULL, 0).
            let r = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    c.pidfd,
                    signal,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            if r == 0 {
                HAVE_PIDFD_SEND_SIGNAL.store(YES, Ordering::Relaxed);
                return Ok(());
            }
            match errno() {
                libc::ESRCH => return Ok(()), // ended, not joined yet
                libc::ENOSYS => HAVE_PIDFD_SEND_SIGNAL.store(NO, Ordering::Relaxed),
                e => return Err(Error::os(call(), e)),
            }
        }
        // No pidfd: the pid is still this child's (a zombie at worst), as
        // it has not been reaped by conc, which holds the lock.
        // SAFETY: kill takes no pointers.
        if unsafe { libc::kill(pid as libc::pid_t, signal) } < 0 {
            let e = errno();
            if e != libc::ESRCH {
                return Err(Error::os(call(), e));
            }
        }
        Ok(())
    })
}

/// A descriptor that becomes readable (`POLLIN`) when the child `process`
/// ends: Python's `sentinel`, for `poll`, `select` or `epoll` loops that
/// wait on several children and other descriptors at once. It is the pidfd
/// conc holds for the child: the same descriptor for the handle's whole
/// life, owned by conc, valid until the child is joined. Never close it,
/// and take it out of an epoll set before joining. It is close-on-exec.
///
/// Returns -1 for a joined, zero or forged handle, on kernels without
/// pidfd (before Linux 5.3), and when conc could not open one (out of
/// descriptors, or the child was reaped elsewhere at once: see
/// `conc_process_spawn`).
#[no_mangle]
pub extern "C" fn conc_process_fd(process: conc_process) -> c_int {
    guard_value("conc_process_fd", -1, || {
        let children = lock_children();
        children
            .iter()
            .find(|c| c.pid == process.pid && process.pid != 0)
            .map_or(-1, |c| c.pidfd)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::*;
    use std::ptr;

    unsafe extern "C" fn return_arg(arg: *mut c_void) -> c_int {
        arg as usize as c_int
    }

    unsafe extern "C" fn kill_self(_: *mut c_void) -> c_int {
        // SAFETY: raising a signal is always allowed.
        unsafe { libc::raise(libc::SIGKILL) };
        0
    }

    /// Writes 1 at the shared byte `arg` points to.
    unsafe extern "C" fn write_shared(arg: *mut c_void) -> c_int {
        // SAFETY: arg points into a shared mapping made by the test.
        unsafe { *(arg as *mut u8) = 1 };
        0
    }

    fn spawn(f: conc_process_fn, arg: usize) -> conc_process {
        let mut p = conc_process { pid: -1 };
        // SAFETY: p is valid; the test functions ignore or own arg.
        let st = unsafe { conc_process_spawn(&mut p, f, arg as *mut c_void) };
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        assert!(p.pid > 0);
        p
    }

    fn join(p: conc_process) -> (conc_status, c_int) {
        let mut code = -1;
        // SAFETY: code is valid for writes.
        let st = unsafe { conc_process_join(p, &mut code) };
        (st, code)
    }

    #[test]
    fn exit_codes() {
        for (arg, want) in [(0, 0), (7, 7), (255, 255), (256, 0), (300, 44)] {
            let p = spawn(Some(return_arg), arg);
            assert_eq!(join(p), (CONC_OK, want), "{arg}");
        }
        let p = spawn(Some(kill_self), 0);
        assert_eq!(join(p), (CONC_OK, 128 + libc::SIGKILL));
    }

    #[test]
    fn join_once() {
        let p = spawn(Some(return_arg), 3);
        // SAFETY: exit_code may be NULL.
        assert_eq!(unsafe { conc_process_join(p, ptr::null_mut()) }, CONC_OK);
        assert_eq!(join(p), (CONC_ERR_INVALID_STATE, -1));
        assert!(last_error_message().contains("joined already"));
        assert_eq!(join(conc_process { pid: 0 }).0, CONC_ERR_INVALID_STATE);
        let me = conc_process {
            pid: i64::from(std::process::id()),
        };
        assert_eq!(join(me).0, CONC_ERR_INVALID_STATE);
        assert_eq!(join(conc_process { pid: -1 }).0, CONC_ERR_INVALID_STATE);
    }

    #[test]
    fn null_arguments() {
        let mut p = conc_process { pid: 5 };
        // SAFETY: NULLs are refused before use.
        unsafe {
            assert_eq!(
                conc_process_spawn(ptr::null_mut(), Some(return_arg), ptr::null_mut()),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                conc_process_spawn(&mut p, None, ptr::null_mut()),
                CONC_ERR_INVALID_ARGUMENT
            );
        }
        assert_eq!(p.pid, 0);
        assert_eq!(
            last_error_message(),
            "conc_process_spawn: argument `fn` is NULL"
        );
    }

    /// Runs in a fresh process of this test binary (re-executed with only
    /// this test selected), where no lazy initialisation has happened yet.
    #[test]
    fn spawn_completes_lazy_initialisation_before_forking() {
        const FRESH: &str = "CONC_TEST_FRESH_PROCESS";
        const NAME: &str = "process::tests::spawn_completes_lazy_initialisation_before_forking";
        if std::env::var_os(FRESH).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--test-threads=1"])
                .env(FRESH, "1")
                .output()
                .expect("re-run the test binary");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 passed"), "{text}");
            return;
        }
        assert!(!crate::thread::lazy_statics_ready());
        assert!(!crate::mmap::lazy_statics_ready());
        let p = spawn(Some(return_arg), 0);
        // Each lazy value is complete by the time of the fork, so no thread
        // can be half-way through one while it happens.
        assert!(crate::thread::lazy_statics_ready());
        assert!(crate::mmap::lazy_statics_ready());
        assert_eq!(join(p), (CONC_OK, 0));
    }

    #[test]
    fn child_shares_anonymous_shared_memory() {
        // SAFETY: a fresh shared anonymous page.
        let page = unsafe {
            libc::mmap(
                ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED);
        let p = spawn(Some(write_shared), page as usize);
        assert_eq!(join(p), (CONC_OK, 0));
        // SAFETY: the page is mapped; the child has exited.
        unsafe {
            assert_eq!(*(page as *const u8), 1);
            libc::munmap(page, 4096);
        }
    }

    unsafe extern "C" fn sleep_forever(_: *mut c_void) -> c_int {
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }

    unsafe extern "C" fn sleep_200ms(_: *mut c_void) -> c_int {
        std::thread::sleep(std::time::Duration::from_millis(200));
        5
    }

    fn join_timeout(p: conc_process, ms: u64) -> (conc_status, c_int) {
        let mut code = -1;
        // SAFETY: code is valid for writes.
        let st = unsafe { conc_process_join_timeout(p, ms, &mut code) };
        (st, code)
    }

    fn poll_readable(fd: c_int, ms: c_int) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    }

    /// kill, fd and join_timeout, with every pidfd call (mask 0) or with
    /// some pretended missing, as on older kernels.
    fn control(mask: u8) {
        PRETEND_MISSING.with(|p| p.set(mask));
        let p = spawn(Some(sleep_forever), 0);
        let fd = conc_process_fd(p);
        if mask & 1 == 0 {
            assert!(fd >= 0);
            assert!(!poll_readable(fd, 0));
        } else {
            assert_eq!(fd, -1);
        }
        assert_eq!(conc_process_fd(p), fd, "the same descriptor every time");
        assert_eq!(join_timeout(p, 0), (CONC_ERR_TIMED_OUT, -1));
        let start = std::time::Instant::now();
        assert_eq!(join_timeout(p, 30), (CONC_ERR_TIMED_OUT, -1));
        assert!(start.elapsed() >= std::time::Duration::from_millis(30));
        assert_eq!(conc_process_kill(p, 0), CONC_OK);
        assert_eq!(conc_process_kill(p, -1), CONC_ERR_INVALID_ARGUMENT);
        assert_eq!(
            conc_process_kill(p, libc::SIGRTMAX() + 1),
            CONC_ERR_INVALID_ARGUMENT
        );
        assert_eq!(conc_process_kill(p, libc::SIGTERM), CONC_OK);
        if fd >= 0 {
            assert!(poll_readable(fd, 10_000));
        }
        // Ended, not joined: not an error, nothing sent.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(conc_process_kill(p, libc::SIGKILL), CONC_OK);
        assert_eq!(conc_process_kill(p, 0), CONC_OK);
        assert_eq!(join_timeout(p, 10_000), (CONC_OK, 128 + libc::SIGTERM));
        assert_eq!(conc_process_fd(p), -1);
        assert_eq!(conc_process_kill(p, 0), CONC_ERR_INVALID_STATE);
        assert_eq!(conc_process_kill(p, libc::SIGKILL), CONC_ERR_INVALID_STATE);
        assert_eq!(join_timeout(p, 0).0, CONC_ERR_INVALID_STATE);
        let q = spawn(Some(sleep_200ms), 0);
        assert_eq!(join_timeout(q, 10_000), (CONC_OK, 5));
        PRETEND_MISSING.with(|p| p.set(0));
    }

    #[test]
    fn control_with_pidfd() {
        control(0);
    }

    #[test]
    fn control_without_waitid_pidfd() {
        control(4);
    }

    #[test]
    fn control_without_pidfd_send_signal() {
        control(2);
    }

    #[test]
    fn control_without_any_pidfd() {
        control(7);
    }

    #[test]
    fn forged_handles_get_no_signal_and_no_fd() {
        for pid in [0, -1, i64::from(std::process::id()), i64::MAX] {
            let h = conc_process { pid };
            assert_eq!(conc_process_kill(h, 0), CONC_ERR_INVALID_STATE);
            assert_eq!(conc_process_fd(h), -1);
            assert_eq!(join_timeout(h, 0).0, CONC_ERR_INVALID_STATE);
        }
    }

    #[test]
    fn a_timed_join_keeps_others_out_until_it_ends() {
        let p = spawn(Some(sleep_200ms), 0);
        let t = std::thread::spawn(move || join_timeout(p, 10_000));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (st, _) = join_timeout(p, 0);
        assert_eq!(st, CONC_ERR_INVALID_STATE);
        assert!(last_error_message().contains("another thread is joining"));
        assert_eq!(t.join().unwrap(), (CONC_OK, 5));
    }

    /// The pid-reuse scenario, as pid 1 of a fresh pid namespace: 0 when
    /// every promise held, else the number of the step that failed.
    fn reuse_scenario() -> i32 {
        let a = spawn(Some(return_arg), 5);
        // Reaped behind conc's back, as SIGCHLD ignored or waitpid(-1) do.
        // SAFETY: plain waitpid.
        if unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } != a.pid as libc::pid_t {
            return 1;
        }
        if std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", a.pid - 1)).is_err() {
            return 77;
        }
        let mut go = [0; 2];
        // SAFETY: go holds two descriptors.
        if unsafe { libc::pipe(go.as_mut_ptr()) } != 0 {
            return 2;
        }
        // SAFETY: the child only reads a pipe and _exits.
        let b = unsafe { libc::fork() };
        if b == 0 {
            let mut c = 0u8;
            // SAFETY: plain read and _exit.
            unsafe {
                libc::read(go[0], (&mut c as *mut u8).cast(), 1);
                libc::_exit(99)
            }
        }
        if i64::from(b) != a.pid {
            return 3;
        }
        // The stranger with a's pid is never signalled...
        if conc_process_kill(a, libc::SIGKILL) != CONC_OK {
            return 4;
        }
        // ...and its status is never taken.
        if join(a) != (CONC_ERR_INVALID_STATE, -1) || errno_of_last() != libc::ECHILD {
            return 5;
        }
        let mut st = 0;
        // SAFETY: plain waitpid, write and waitpid.
        unsafe {
            if libc::waitpid(b, &mut st, libc::WNOHANG) != 0 {
                return 6;
            }
            libc::write(go[1], b"g".as_ptr().cast(), 1);
            if libc::waitpid(b, &mut st, 0) != b || libc::WEXITSTATUS(st) != 99 {
                return 7;
            }
        }
        0
    }

    fn errno_of_last() -> i32 {
        crate::error::conc_last_os_error()
    }

    /// Runs in a fresh process of this test binary, which moves its future
    /// children into a new pid namespace (so it never disturbs the other
    /// tests), where a forced pid reuse is reliable.
    #[test]
    fn reused_pid_is_never_signalled_nor_joined() {
        const FRESH: &str = "CONC_TEST_PID_NAMESPACE";
        const NAME: &str = "process::tests::reused_pid_is_never_signalled_nor_joined";
        if std::env::var_os(FRESH).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--test-threads=1", "--nocapture"])
                .env(FRESH, "1")
                .output()
                .expect("re-run the test binary");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 passed"), "{text}");
            if let Some(line) = text.lines().find(|l| l.contains("skipped:")) {
                println!("{line}");
            }
            return;
        }
        // SAFETY: unshare takes no pointers.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            println!(
                "skipped: pid namespaces unavailable ({})",
                std::io::Error::last_os_error()
            );
            return;
        }
        // SAFETY: the child runs the scenario and _exits.
        let init = unsafe { libc::fork() };
        if init == 0 {
            let code = reuse_scenario();
            // SAFETY: ending the namespace's init.
            unsafe { libc::_exit(code) }
        }
        let mut st = 0;
        // SAFETY: plain waitpid.
        assert_eq!(unsafe { libc::waitpid(init, &mut st, 0) }, init);
        assert!(libc::WIFEXITED(st));
        match libc::WEXITSTATUS(st) {
            0 => {}
            77 => println!("skipped: cannot write ns_last_pid"),
            n => panic!("the pid-reuse scenario failed at step {n}"),
        }
    }
}
