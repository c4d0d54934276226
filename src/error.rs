//! The error model: `conc_status`, the per-thread last error, and the
//! version and status-description functions.
//!
//! Every failing call records a message naming the operation, its argument
//! and the OS reason in a thread-local slot that `conc_last_error_message`
//! reads. A successful call leaves the slot as it was.
//!
//! # Out of memory
//!
//! A failure must be reportable when the heap is exhausted, so nothing on
//! an error path allocates:
//!
//! - an [`Error`]'s message is a [`Message`], a fixed-capacity inline
//!   buffer ([`MESSAGE_CAPACITY`] bytes, cut at a UTF-8 boundary), filled
//!   by formatting into it;
//! - the per-thread slot behind `conc_last_error_message` is a fixed array
//!   in a `const`-initialised thread local with no destructor, so neither
//!   recording nor reading it allocates (not even the first time on a
//!   thread);
//! - [`describe_errno`] formats `strerror_r` and `strerrorname_np` into a
//!   [`Message`].
//!
//! **Convention for call sites:** build messages with `format_args!`, never
//! `format!`: `Error::new(CONC_ERR_INVALID_ARGUMENT, format_args!("{op}:
//! size is 0"))`, `Error::os(format_args!("{op}({name})"), errno)`. A
//! context that is built once and used several times is a [`Message`]:
//! `let call = || msg!("{op}({})", ShowName(name));` (the [`msg!`] macro
//! formats into one, on the stack).

use std::cell::{Cell, UnsafeCell};
use std::ffi::{c_char, c_int, CStr};
use std::fmt;
use std::ops::Deref;

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

/// How many bytes an error message holds; longer messages are cut at a
/// UTF-8 boundary.
pub(crate) const MESSAGE_CAPACITY: usize = 256;

/// A string of at most [`MESSAGE_CAPACITY`] bytes, stored inline: made by
/// formatting into it (`msg!`, [`Message::from_args`], `fmt::Write`),
/// never allocating. What does not fit is dropped at a character boundary.
#[derive(Clone, Copy)]
pub struct Message {
    len: usize,
    buf: [u8; MESSAGE_CAPACITY],
}

impl Message {
    /// The empty message.
    pub const fn new() -> Message {
        Message {
            len: 0,
            buf: [0; MESSAGE_CAPACITY],
        }
    }

    /// The formatted `args`, cut to [`MESSAGE_CAPACITY`] bytes.
    pub fn from_args(args: fmt::Arguments<'_>) -> Message {
        let mut m = Message::new();
        let _ = fmt::write(&mut m, args);
        m
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: write_str only ever appends whole UTF-8 characters.
        unsafe { std::str::from_utf8_unchecked(&self.buf[..self.len]) }
    }
}

impl Default for Message {
    fn default() -> Message {
        Message::new()
    }
}

impl fmt::Write for Message {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = MESSAGE_CAPACITY - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        // Never an error: a cut message is still worth having.
        Ok(())
    }
}

impl std::ops::AddAssign<&str> for Message {
    fn add_assign(&mut self, s: &str) {
        let _ = fmt::Write::write_str(self, s);
    }
}

impl std::ops::Add<&str> for Message {
    type Output = Message;
    fn add(mut self, s: &str) -> Message {
        self += s;
        self
    }
}

impl Deref for Message {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Message {}

impl PartialEq<str> for Message {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Message {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Formats into a [`Message`] on the stack, like `format!` without the
/// heap: `msg!("{op}({name})")`.
#[macro_export]
macro_rules! msg {
    ($($arg:tt)*) => {
        $crate::error::Message::from_args(format_args!($($arg)*))
    };
}

/// The error every internal operation returns: a status, the full message
/// for `conc_last_error_message`, and the errno behind it (0 if none).
/// Building one never allocates (see the module's "Out of memory").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: conc_status,
    pub message: Message,
    pub os_error: i32,
}

/// The result type of conc's internal operations.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with no OS cause. `message` is formatted into the error's
    /// inline buffer: pass `format_args!(...)` or a `&str`, not `format!`.
    pub fn new(status: conc_status, message: impl fmt::Display) -> Error {
        Error {
            status,
            message: msg!("{message}"),
            os_error: 0,
        }
    }

    /// `CONC_ERR_INVALID_ARGUMENT` with a message.
    pub fn invalid(message: impl fmt::Display) -> Error {
        Error::new(CONC_ERR_INVALID_ARGUMENT, message)
    }

    /// `CONC_ERR_INVALID_ARGUMENT` for a NULL pointer argument.
    pub fn null(op: &str, arg: &str) -> Error {
        Error::invalid(format_args!("{op}: argument `{arg}` is NULL"))
    }

    /// `CONC_ERR_RESOURCE_EXHAUSTED` for memory conc could not get,
    /// `what` naming the call and what it needed.
    pub fn no_memory(what: impl fmt::Display) -> Error {
        Error {
            status: CONC_ERR_RESOURCE_EXHAUSTED,
            message: msg!("{what}: out of memory (ENOMEM)"),
            os_error: libc::ENOMEM,
        }
    }

    /// An error caused by the OS error `errno`, with the status derived from
    /// it. `context` names the operation and its argument, e.g.
    /// `conc_shm_open("psm_1f2e3d4c")`.
    pub fn os(context: impl fmt::Display, errno: i32) -> Error {
        Error {
            status: status_from_errno(errno),
            message: msg!("{context}: {}", describe_errno(errno)),
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
fn errno_name(errno: i32) -> Option<&'static str> {
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
    if name.is_null() {
        return None;
    }
    // SAFETY: non-NULL results point to static NUL-terminated strings.
    unsafe { CStr::from_ptr(name) }.to_str().ok()
}

/// `"No such file or directory (ENOENT)"` for `ENOENT`. Never allocates:
/// the text comes from `strerror_r` into a stack buffer.
pub fn describe_errno(errno: i32) -> Message {
    let mut buf = [0u8; 128];
    // SAFETY: the buffer is writable for its length; the XSI strerror_r
    // (which the libc crate binds on glibc) NUL-terminates within it.
    let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr().cast(), buf.len()) };
    let text = if rc == 0 {
        CStr::from_bytes_until_nul(&buf)
            .ok()
            .and_then(|c| c.to_str().ok())
            .unwrap_or("Unknown error")
    } else {
        "Unknown error"
    };
    match errno_name(errno) {
        Some(name) => msg!("{text} ({name})"),
        None => msg!("{text} (errno {errno})"),
    }
}

/// The per-thread copy of the last error message, NUL-terminated. Room
/// for every byte of a [`Message`] with each NUL in it written as `\\0`.
const SLOT_SIZE: usize = 2 * MESSAGE_CAPACITY + 1;

thread_local! {
    // Both are const-initialised with types that need no destructor, so
    // they live in the thread's static TLS block: no allocation and no
    // destructor registration, ever.
    static LAST_MESSAGE: UnsafeCell<[u8; SLOT_SIZE]> = const { UnsafeCell::new([0; SLOT_SIZE]) };
    static LAST_OS_ERROR: Cell<i32> = const { Cell::new(0) };
}

/// Records `err` as the calling thread's last error. Never allocates.
pub fn set_last_error(err: &Error) {
    let _ = LAST_MESSAGE.try_with(|slot| {
        // SAFETY: the slot belongs to this thread, and no reference into it
        // is alive: C holds at most a raw pointer, documented as valid only
        // until the next failing call on this thread.
        let slot = unsafe { &mut *slot.get() };
        let mut n = 0;
        for &b in err.message.as_bytes() {
            if b == 0 {
                slot[n] = b'\\';
                slot[n + 1] = b'0';
                n += 2;
            } else {
                slot[n] = b;
                n += 1;
            }
        }
        slot[n] = 0;
    });
    let _ = LAST_OS_ERROR.try_with(|e| e.set(err.os_error));
}

/// The calling thread's last error message, for tests written in Rust.
pub fn last_error_message() -> String {
    LAST_MESSAGE
        .try_with(|slot| {
            // SAFETY: this thread's slot, always NUL-terminated.
            let bytes = unsafe { &*slot.get() };
            CStr::from_bytes_until_nul(bytes)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
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
        .try_with(|slot| slot.get().cast::<c_char>().cast_const())
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
    fn long_messages_are_cut_at_a_character_boundary() {
        // 255 ASCII bytes, then a 2-byte character that does not fit whole.
        let text = format!("{}é and more", "x".repeat(MESSAGE_CAPACITY - 1));
        let e = Error::new(CONC_ERR_IO, &text);
        assert_eq!(e.message.len(), MESSAGE_CAPACITY - 1);
        assert!(text.starts_with(e.message.as_str()));
        let e = Error::new(CONC_ERR_IO, format_args!("{}", "é".repeat(200)));
        assert_eq!(e.message.len(), MESSAGE_CAPACITY);
        assert_eq!(e.message.chars().count(), MESSAGE_CAPACITY / 2);
    }

    #[test]
    fn nul_bytes_in_messages_are_shown() {
        std::thread::spawn(|| {
            set_last_error(&Error::new(CONC_ERR_IO, "a\0b"));
            assert_eq!(last_error_message(), "a\\0b");
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
