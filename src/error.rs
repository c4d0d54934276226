//! The error model: `conc_status`, the per-thread last error, and the
//! version and status-description functions.
//!
//! Every failing call records a message naming the operation, its argument
//! and the OS reason in a thread-local slot that `conc_last_error_message`
//! reads. A successful call leaves the slot as it was.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, CStr, CString};
use std::fmt;

/// The result of every conc function that can fail. The values are fixed
/// forever: a program may store or compare them as integers.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum conc_status {
    /// Success.
    CONC_OK = 0,
    /// NULL where a pointer is required, a bad flag, a bad name, size 0, or an
    /// unknown enum value.
    CONC_ERR_INVALID_ARGUMENT = 1,
    /// The file or segment does not exist.
    CONC_ERR_NOT_FOUND = 2,
    /// A create of a name that is taken.
    CONC_ERR_ALREADY_EXISTS = 3,
    /// The OS refused access.
    CONC_ERR_PERMISSION_DENIED = 4,
    /// An index, offset or length past the end.
    CONC_ERR_OUT_OF_RANGE = 5,
    /// A handle already joined or detached, or never valid.
    CONC_ERR_INVALID_STATE = 6,
    /// A thread tried to join itself.
    CONC_ERR_DEADLOCK = 7,
    /// The OS is out of threads, memory, descriptors or space.
    CONC_ERR_RESOURCE_EXHAUSTED = 8,
    /// Any other OS failure.
    CONC_ERR_IO = 9,
    /// Not available on this platform.
    CONC_ERR_UNSUPPORTED = 10,
    /// A bug inside conc, caught at the boundary instead of aborting.
    CONC_ERR_PANIC = 11,
    /// A `*_timeout` call ran out of time; nothing changed.
    CONC_ERR_TIMED_OUT = 12,
    /// A `try*` call would have had to wait; nothing changed.
    CONC_ERR_BUSY = 13,
    /// The mutex was acquired, but the thread or process that held it ended
    /// without unlocking it: the data it guards may be half-updated.
    CONC_ERR_OWNER_DEAD = 14,
    /// The queue was shut down: no more pushes, and no more messages to pop.
    CONC_ERR_SHUTDOWN = 15,
}

pub use conc_status::*;

/// A `conc_status` as it arrives from C: any integer, checked before use.
/// Spelled `conc_status` in the header.
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct RawStatus(pub u32);

/// The error every internal operation returns: a status, the full message
/// for `conc_last_error_message`, and the errno behind it (0 if none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: conc_status,
    pub message: String,
    pub os_error: i32,
}

/// The result type of conc's internal operations.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with no OS cause.
    pub fn new(status: conc_status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
            os_error: 0,
        }
    }

    /// `CONC_ERR_INVALID_ARGUMENT` with a message.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(CONC_ERR_INVALID_ARGUMENT, message)
    }

    /// `CONC_ERR_INVALID_ARGUMENT` for a NULL pointer argument.
    pub fn null(op: &str, arg: &str) -> Error {
        Error::invalid(format!("{op}: argument `{arg}` is NULL"))
    }

    /// An error caused by the OS error `errno`, with the status derived from
    /// it. `context` names the operation and its argument, e.g.
    /// `conc_shm_open("psm_1f2e3d4c")`.
    pub fn os(context: impl fmt::Display, errno: i32) -> Error {
        Error {
            status: status_from_errno(errno),
            message: format!("{context}: {}", describe_errno(errno)),
            os_error: errno,
        }
    }

    /// Like [`Error::os`] with the calling thread's current `errno`.
    pub fn last_os(context: impl fmt::Display) -> Error {
        Error::os(context, errno())
    }

    /// The same error with another status (the message and errno stay).
    pub fn with_status(mut self, status: conc_status) -> Error {
        self.status = status;
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The conc status an OS error maps to.
pub fn status_from_errno(errno: i32) -> conc_status {
    match errno {
        libc::ENOENT | libc::ENOTDIR | libc::ENODEV | libc::ESRCH => CONC_ERR_NOT_FOUND,
        libc::EEXIST => CONC_ERR_ALREADY_EXISTS,
        libc::EACCES | libc::EPERM | libc::EROFS => CONC_ERR_PERMISSION_DENIED,
        libc::EAGAIN
        | libc::ENOMEM
        | libc::EMFILE
        | libc::ENFILE
        | libc::ENOSPC
        | libc::EFBIG
        | libc::EDQUOT => CONC_ERR_RESOURCE_EXHAUSTED,
        libc::EINVAL | libc::EISDIR | libc::ENAMETOOLONG => CONC_ERR_INVALID_ARGUMENT,
        libc::EDEADLK => CONC_ERR_DEADLOCK,
        libc::ENOSYS | libc::EOPNOTSUPP => CONC_ERR_UNSUPPORTED,
        _ => CONC_ERR_IO,
    }
}

/// The symbolic name of an errno value (`"ENOENT"`), from glibc's
/// `strerrorname_np`. That function is new in glibc 2.32, so it is looked
/// up at run time rather than linked: `libconc.a` then links against older
/// C libraries too, whose messages say `errno N` instead. Looked up on each
/// call (failure paths only) so that nothing is cached mid-initialisation
/// across a fork.
fn errno_name(errno: i32) -> Option<String> {
    type StrerrornameNp = unsafe extern "C" fn(c_int) -> *const c_char;
    // SAFETY: dlsym with a NUL-terminated name has no other precondition.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"strerrorname_np".as_ptr()) };
    if sym.is_null() {
        return None;
    }
    // SAFETY: when present, the symbol is glibc's strerrorname_np.
    let f = unsafe { std::mem::transmute::<*mut libc::c_void, StrerrornameNp>(sym) };
    // SAFETY: strerrorname_np takes any int and returns NULL or a pointer to
    // a static NUL-terminated string.
    let name = unsafe { f(errno) };
    // SAFETY: non-NULL results point to static NUL-terminated strings.
    (!name.is_null()).then(|| {
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    })
}

/// `"No such file or directory (ENOENT)"` for `ENOENT`.
pub fn describe_errno(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    // std appends " (os error N)"; the C reader wants the symbolic name.
    let text = match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    match errno_name(errno) {
        Some(name) => format!("{text} ({name})"),
        None => format!("{text} (errno {errno})"),
    }
}

thread_local! {
    static LAST_MESSAGE: RefCell<CString> = RefCell::new(CString::default());
    static LAST_OS_ERROR: Cell<i32> = const { Cell::new(0) };
}

/// Records `err` as the calling thread's last error.
pub fn set_last_error(err: &Error) {
    let message = CString::new(err.message.replace('\0', "\\0")).unwrap_or_default();
    // During thread teardown the slots may be gone; the error is then lost,
    // which is better than a panic.
    let _ = LAST_MESSAGE.try_with(|m| *m.borrow_mut() = message);
    let _ = LAST_OS_ERROR.try_with(|e| e.set(err.os_error));
}

/// The calling thread's last error message, for tests written in Rust.
pub fn last_error_message() -> String {
    LAST_MESSAGE
        .try_with(|m| m.borrow().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Returns a static, never-NULL description of `status`, e.g.
/// `"invalid argument"`. Values that are not a `conc_status` give
/// `"unknown status"`. The string is owned by conc and never freed.
#[no_mangle]
pub extern "C" fn conc_status_str(status: RawStatus) -> *const c_char {
    let text: &'static CStr = match status.0 {
        0 => c"ok",
        1 => c"invalid argument",
        2 => c"not found",
        3 => c"already exists",
        4 => c"permission denied",
        5 => c"out of range",
        6 => c"invalid state",
        7 => c"deadlock",
        8 => c"resource exhausted",
        9 => c"I/O error",
        10 => c"unsupported",
        11 => c"panic inside conc",
        12 => c"timed out",
        13 => c"busy",
        14 => c"owner dead",
        15 => c"shut down",
        _ => c"unknown status",
    };
    text.as_ptr()
}

/// Returns the calling thread's message for its most recent failed conc
/// call, naming the operation, the argument and the OS reason, e.g.
/// `conc_shm_open("psm_1f2e3d4c"): No such file or directory (ENOENT)`.
/// Returns `""` (never NULL) when this thread has had no failure. A
/// successful call does not clear it.
///
/// The string is owned by conc and stays valid until the next failing conc
/// call on the same thread, or until the thread exits; copy it to keep it.
#[no_mangle]
pub extern "C" fn conc_last_error_message() -> *const c_char {
    LAST_MESSAGE
        .try_with(|m| m.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// Returns the errno behind the calling thread's most recent failed conc
/// call, or 0 when that failure had no OS cause (or there was none).
#[no_mangle]
pub extern "C" fn conc_last_os_error() -> c_int {
    LAST_OS_ERROR.try_with(|e| e.get()).unwrap_or(0)
}

/// Returns the library's version as a static string, `"MAJOR.MINOR.PATCH"`,
/// matching the `CONC_VERSION_*` macros of the header it was built with.
/// The string is owned by conc and never freed.
#[no_mangle]
pub extern "C" fn conc_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_values_are_fixed() {
        assert_eq!(CONC_OK as u32, 0);
        assert_eq!(CONC_ERR_INVALID_ARGUMENT as u32, 1);
        assert_eq!(CONC_ERR_NOT_FOUND as u32, 2);
        assert_eq!(CONC_ERR_ALREADY_EXISTS as u32, 3);
        assert_eq!(CONC_ERR_PERMISSION_DENIED as u32, 4);
        assert_eq!(CONC_ERR_OUT_OF_RANGE as u32, 5);
        assert_eq!(CONC_ERR_INVALID_STATE as u32, 6);
        assert_eq!(CONC_ERR_DEADLOCK as u32, 7);
        assert_eq!(CONC_ERR_RESOURCE_EXHAUSTED as u32, 8);
        assert_eq!(CONC_ERR_IO as u32, 9);
        assert_eq!(CONC_ERR_UNSUPPORTED as u32, 10);
        assert_eq!(CONC_ERR_PANIC as u32, 11);
        assert_eq!(CONC_ERR_TIMED_OUT as u32, 12);
        assert_eq!(CONC_ERR_BUSY as u32, 13);
        assert_eq!(CONC_ERR_OWNER_DEAD as u32, 14);
        assert_eq!(CONC_ERR_SHUTDOWN as u32, 15);
    }

    #[test]
    fn status_str_covers_unknown_values() {
        for v in [0u32, 5, 11, 12, 15, 16, 999, u32::MAX] {
            let p = conc_status_str(RawStatus(v));
            assert!(!p.is_null());
            // SAFETY: conc_status_str returns a static C string.
            let s = unsafe { CStr::from_ptr(p) }.to_str().unwrap();
            assert!(!s.is_empty());
            if v >= 16 {
                assert_eq!(s, "unknown status");
            }
        }
    }

    #[test]
    fn os_error_message_names_errno() {
        let e = Error::os("conc_shm_open(\"psm_1f2e3d4c\")", libc::ENOENT);
        assert_eq!(e.status, CONC_ERR_NOT_FOUND);
        assert_eq!(
            e.message,
            "conc_shm_open(\"psm_1f2e3d4c\"): No such file or directory (ENOENT)"
        );
        assert_eq!(e.os_error, libc::ENOENT);
    }

    #[test]
    fn last_error_is_per_thread_and_empty_at_start() {
        std::thread::spawn(|| {
            // SAFETY: the pointer is a valid C string for this thread.
            let s = unsafe { CStr::from_ptr(conc_last_error_message()) };
            assert_eq!(s.to_bytes(), b"");
            assert_eq!(conc_last_os_error(), 0);
            set_last_error(&Error::os("op", libc::EACCES));
            assert_eq!(last_error_message(), "op: Permission denied (EACCES)");
            assert_eq!(conc_last_os_error(), libc::EACCES);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(status_from_errno(libc::EEXIST), CONC_ERR_ALREADY_EXISTS);
        assert_eq!(status_from_errno(libc::EAGAIN), CONC_ERR_RESOURCE_EXHAUSTED);
        assert_eq!(status_from_errno(libc::ENOSPC), CONC_ERR_RESOURCE_EXHAUSTED);
        assert_eq!(status_from_errno(libc::EPERM), CONC_ERR_PERMISSION_DENIED);
        assert_eq!(status_from_errno(libc::EIO), CONC_ERR_IO);
    }

    #[test]
    fn version_matches_cargo() {
        // SAFETY: conc_version returns a static C string.
        let v = unsafe { CStr::from_ptr(conc_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
