//! Child processes: a fork of the caller that runs one C function and
//! exits with its result, the counterpart of Python's `mp.Process` with the
//! fork start method.
//!
//! Fork safety. Only the forking thread exists in the child, so every lock
//! another thread held at the fork would stay locked there forever. conc
//! therefore takes its own locks (the thread registry, the live-object set,
//! the child registry below) before `fork` and releases them right after it
//! in both processes: the child never inherits one of them locked, so conc
//! calls made by `fn` do not deadlock. For the same reason conc completes
//! its lazy initialisations (`OnceLock`s) before the fork: one under way in
//! another thread at the fork would stay under way in the child forever,
//! and the child's first call needing it would wait for ever. glibc does
//! the same for malloc and
//! stdio. Between the fork and `fn` the child does nothing that allocates
//! or takes a lock: it unlocks the guards (atomic stores), clears its copy
//! of the child registry (no allocation), and discards the stdio output
//! buffers it copied (`__fpurge`).

use std::ffi::{c_int, c_void};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{conc_status, errno, Error, CONC_ERR_INVALID_STATE};
use crate::ffi::{guard, opt_out_ref, out_ref};

/// A child process made by `conc_process_spawn`: a small copyable value,
/// like `pid_t`. `pid` is the child's process id (0 is never a valid
/// handle). Joining a zeroed, forged or already joined handle, or a copy of
/// one, is refused with `CONC_ERR_INVALID_STATE`.
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

/// The pids of the children spawned by this process and not joined yet.
/// A Vec, not a set: there are few, and `reserve` before the fork lets the
/// parent record the new pid after it without reallocating.
static CHILDREN: Mutex<Vec<i64>> = Mutex::new(Vec::new());

fn lock_children() -> MutexGuard<'static, Vec<i64>> {
    CHILDREN.lock().unwrap_or_else(PoisonError::into_inner)
}

extern "C" {
    // glibc <stdio_ext.h>: discard a stream's buffered data, without
    // taking its lock. Not in the libc crate.
    fn __fpurge(stream: *mut libc::FILE);
    static stdout: *mut libc::FILE;
    static stderr: *mut libc::FILE;
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
    // SAFETY: the caller promised `f` is a function taking `arg`.
    let code = unsafe { f(arg) };
    // SAFETY: flushing all streams and ending the process without atexit
    // handlers or unwinding are what the child must do.
    unsafe {
        libc::fflush(std::ptr::null_mut());
        libc::_exit(code & 0xff)
    }
}

/// Starts a child process: a fork of the caller that runs `fn(arg)`,
/// flushes its stdio, and ends with `_exit(fn's return value & 0xff)`. The
/// parent's `atexit` handlers never run in the child.
///
/// The child sees the caller's memory as it was at the call and shares
/// every `conc_shm` and `conc_list` mapping and anonymous `conc_mmap` with
/// it; its other memory is a private copy. Only the calling thread exists
/// in the child. The child never inherits one of conc's own locks locked
/// (conc takes them around the fork and releases them on both sides), so
/// conc calls in the child never deadlock; locks of other libraries held
/// by other threads at that moment may stay locked in the child, as with
/// any `fork` (glibc's malloc and stdio are safe). stdio output buffered
/// before the call is flushed first and printed once, by the parent, even
/// if another thread writes more to `stdout` or `stderr` while the fork
/// happens; output that another thread buffers in any other stream at that
/// very moment may be written by the child as well.
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

        // Output buffered so far is printed once, by the parent. Done
        // before taking any lock: a flush may block on a pipe.
        // SAFETY: fflush(NULL) flushes every output stream.
        unsafe { libc::fflush(std::ptr::null_mut()) };

        // Any lazy initialisation under way in another thread is waited
        // for here, so that none is half done in the child.
        crate::thread::init_lazy_statics();
        crate::mmap::init_lazy_statics();

        // Always in this order, so that no other path can deadlock with it.
        let threads = crate::thread::lock_registry_for_fork();
        let objects = crate::handle::lock_table();
        let mut children = lock_children();
        children
            .try_reserve(1)
            .map_err(|_| Error::no_memory(format_args!("{OP}: the child registry")))?;

        // SAFETY: fork is safe to call; the child only runs run_child.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // The child: its copy of the registry lists its siblings, which
            // are not its children. clear() keeps the buffer: no allocation.
            children.clear();
            drop(children);
            drop(objects);
            drop(threads);
            // SAFETY: this is the freshly forked child; f and arg are the
            // caller's.
            unsafe { run_child(f, arg) }
        }
        let fork_errno = if pid < 0 { errno() } else { 0 };
        if pid > 0 {
            children.push(i64::from(pid));
        }
        drop(children);
        drop(objects);
        drop(threads);
        if pid < 0 {
            return Err(Error::os(format_args!("{OP}: fork"), fork_errno));
        }
        *out = conc_process {
            pid: i64::from(pid),
        };
        Ok(())
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
        let pid = process.pid;
        let call = || crate::msg!("{OP}(pid {pid})");
        // Claim the child: whoever takes it out of the registry joins it.
        {
            let mut children = lock_children();
            let Some(i) = children.iter().position(|&p| p == pid && p != 0) else {
                return Err(Error::new(
                    CONC_ERR_INVALID_STATE,
                    format_args!(
                        "{}: not a child of conc_process_spawn waiting to be joined \
                         (joined already, or never spawned)",
                        call()
                    ),
                ));
            };
            children.swap_remove(i);
        }
        // The registry holds only pids that fork returned, so this fits.
        let pid_t = pid as libc::pid_t;
        let mut status: c_int = 0;
        loop {
            // SAFETY: status is valid for writes.
            let r = unsafe { libc::waitpid(pid_t, &mut status, 0) };
            if r == pid_t {
                break;
            }
            let e = errno();
            if r < 0 && e == libc::EINTR {
                continue;
            }
            let err = Error::os(call(), e);
            return Err(if e == libc::ECHILD {
                err.with_status(CONC_ERR_INVALID_STATE)
            } else {
                err
            });
        }
        let code = if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            libc::WEXITSTATUS(status)
        };
        // SAFETY: exit_code is NULL or valid for writes (caller contract).
        if let Some(slot) = unsafe { opt_out_ref(exit_code) } {
            *slot = code;
        }
        Ok(())
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
}
