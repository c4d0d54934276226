//! Shared memory: named POSIX segments (`shm_open` + `mmap`) that other
//! processes attach to by name, the counterpart of Python's
//! `multiprocessing.shared_memory.SharedMemory`.
//!
//! [`Segment`] is the mapping itself; `conc_shm` wraps it for C, and the
//! shared lists of `list.rs` build on it too. [`segment_path`] is the one
//! place where names are checked.

use std::ffi::{c_char, CStr, CString};
use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{
    conc_status, Error, Result, CONC_ERR_ALREADY_EXISTS, CONC_ERR_NOT_FOUND,
    CONC_ERR_RESOURCE_EXHAUSTED,
};
use crate::ffi::{c_str, guard, guard_value, out_ref};

/// The longest name, not counting an optional leading `/`.
pub(crate) const MAX_NAME_LEN: usize = 30;

/// The prefix of random names, as Python's `SharedMemory` uses on POSIX.
const RANDOM_PREFIX: &str = "psm_";

/// How many random names `create` tries before giving up.
const RANDOM_ATTEMPTS: u32 = 100;

/// What [`segment_path`] returns when it cannot get memory for the path.
pub(crate) const OUT_OF_MEMORY: &str = "out of memory";

/// Checks `name` against the naming rules and returns the path that
/// `shm_open` takes: `/` followed by the name without its optional leading
/// `/`. On a bad name, returns why it is refused ([`OUT_OF_MEMORY`] when
/// there is no memory for the path).
///
/// The rules: an optional leading `/`, then 1 to 30 characters, each a
/// letter, digit, `_`, `-` or `.`; not `.` or `..`.
pub(crate) fn segment_path(name: &CStr) -> std::result::Result<CString, &'static str> {
    let bytes = name.to_bytes();
    let bare = bytes.strip_prefix(b"/").unwrap_or(bytes);
    if bare.is_empty() {
        return Err("the name is empty");
    }
    if bare.contains(&b'/') {
        return Err("only one '/', at the start, is allowed");
    }
    if bare.len() > MAX_NAME_LEN {
        return Err("longer than 30 characters");
    }
    if !bare
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("only letters, digits, '_', '-' and '.' are allowed");
    }
    if bare == b"." || bare == b".." {
        return Err("\".\" and \"..\" are not names");
    }
    // The bytes come from a CStr, so there is no NUL inside.
    crate::ffi::try_cstring(&[b"/", bare]).ok_or(OUT_OF_MEMORY)
}

/// A name as messages show it: `"psm_1f2e3d4c"` (quoted, escaped), or
/// `NULL`.
pub(crate) struct ShowName<'a>(pub Option<&'a CStr>);

impl fmt::Display for ShowName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, "{:?}", String::from_utf8_lossy(name.to_bytes())),
            None => f.write_str("NULL"),
        }
    }
}

/// Checks `name` for the operation `op` whose other arguments read `rest`
/// (e.g. `", 100"`), returning the `shm_open` path or
/// `CONC_ERR_INVALID_ARGUMENT` naming the call.
pub(crate) fn checked_path(op: &str, name: &CStr, rest: fmt::Arguments<'_>) -> Result<CString> {
    segment_path(name).map_err(|why| {
        if why == OUT_OF_MEMORY {
            return Error::no_memory(format_args!("{op}({}{rest})", ShowName(Some(name))));
        }
        Error::invalid(format_args!(
            "{op}({}{rest}): invalid shared memory name: {why}",
            ShowName(Some(name))
        ))
    })
}

/// A fresh random path, `/psm_` and 8 lowercase hex digits.
fn random_path(op: &str) -> Result<CString> {
    let mut bytes = [0u8; 4];
    loop {
        // SAFETY: the buffer is valid for writes of its length.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if n == bytes.len() as isize {
            break;
        }
        let errno = crate::error::errno();
        if n < 0 && errno != libc::EINTR {
            return Err(Error::os(format_args!("{op}: getrandom"), errno));
        }
    }
    let path = crate::msg!("/{RANDOM_PREFIX}{:08x}", u32::from_ne_bytes(bytes));
    crate::ffi::try_cstring(&[path.as_bytes()]).ok_or_else(|| Error::no_memory(op))
}

/// Closes `fd`, ignoring the result (the descriptor is gone either way on
/// Linux).
fn close_fd(fd: libc::c_int) {
    // SAFETY: fd is a descriptor this module opened and still owns.
    unsafe { libc::close(fd) };
}

/// Maps `size` bytes of the segment open on `fd`, shared and writable.
fn map_shared(fd: libc::c_int, size: usize) -> std::result::Result<NonNull<u8>, i32> {
    // SAFETY: a fresh mapping at an address the kernel chooses; fd is open
    // read-write and the segment is at least `size` bytes long.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(crate::error::errno())
    } else {
        NonNull::new(p.cast()).ok_or(libc::ENOMEM)
    }
}

/// A mapped shared memory segment: its memory, size and name. Unmapped on
/// drop; the segment itself lives on until its name is unlinked and every
/// process has unmapped it. The descriptor is closed as soon as the segment
/// is mapped, so a process may hold many segments without using
/// descriptors.
pub(crate) struct Segment {
    ptr: NonNull<u8>,
    size: usize,
    /// `/name`: what `shm_open` takes. The name users see starts after the
    /// slash.
    path: CString,
    /// Set once this handle has unlinked the name, so that a second unlink
    /// through it reports `CONC_ERR_NOT_FOUND` instead of removing a new
    /// segment that has taken the name meanwhile.
    unlinked: AtomicBool,
}

// SAFETY: the mapping is process-wide memory that any thread may touch;
// conc reads and writes it only through atomics or with the caller's
// synchronization (the buffer is the program's), and the other fields are
// owned values.
unsafe impl Send for Segment {}
// SAFETY: as for Send: no interior state but atomics and the mapping.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates a new segment of `size` bytes (not 0), named `name` or a
    /// random `psm_` name, mode 0600, its memory reserved and zero-filled.
    /// On any failure no name is left behind. `op` and `rest` (the call's
    /// other arguments, e.g. `", 100"`) name the call in messages.
    pub(crate) fn create(
        op: &str,
        name: Option<&CStr>,
        size: usize,
        rest: fmt::Arguments<'_>,
    ) -> Result<Segment> {
        let mut given = match name {
            Some(name) => Some(checked_path(op, name, rest)?),
            None => None,
        };
        let random = given.is_none();
        let call = |path: &CStr| {
            let shown = ShowName(Some(&path[1..]));
            match name {
                Some(_) => crate::msg!("{op}({shown}{rest})"),
                None => crate::msg!("{op}(NULL{rest}) with the random name {shown}"),
            }
        };
        if size == 0 {
            return Err(Error::invalid(format_args!(
                "{op}({}{rest}): the size is 0",
                ShowName(name)
            )));
        }
        // posix_fallocate takes an off_t: anything larger cannot be a file.
        let Ok(length) = libc::off_t::try_from(size) else {
            return Err(Error::new(
                CONC_ERR_RESOURCE_EXHAUSTED,
                format_args!(
                    "{op}({}{rest}): larger than the largest possible segment",
                    ShowName(name)
                ),
            ));
        };

        let mut attempts = 0;
        let (path, fd) = loop {
            let path = match given.take() {
                Some(path) => path,
                None => random_path(op)?,
            };
            // O_EXCL: never attach to an existing segment, whoever made it.
            // SAFETY: path is a valid C string.
            let fd = unsafe {
                libc::shm_open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                    0o600,
                )
            };
            if fd >= 0 {
                break (path, fd);
            }
            let errno = crate::error::errno();
            attempts += 1;
            if errno == libc::EEXIST && random && attempts < RANDOM_ATTEMPTS {
                continue;
            }
            let err = Error::os(call(&path), errno);
            return Err(if errno == libc::EEXIST {
                err.with_status(CONC_ERR_ALREADY_EXISTS)
            } else {
                err
            });
        };

        // The name exists now and is ours: on any failure below, close and
        // remove it.
        let made = (|| {
            // shm_open applied the umask; the mode is 0600 whatever it is.
            // SAFETY: fd is the descriptor just opened.
            if unsafe { libc::fchmod(fd, 0o600) } != 0 {
                return Err(Error::last_os(format_args!("{}: fchmod", call(&path))));
            }
            // Reserve the memory now, so that a full /dev/shm fails here
            // instead of raising SIGBUS at a later write. posix_fallocate
            // returns the error instead of setting errno; it also sets the
            // size.
            loop {
                // SAFETY: fd is open for writing; 0..length is a valid range.
                let err = unsafe { libc::posix_fallocate(fd, 0, length) };
                match err {
                    0 => break,
                    libc::EINTR => continue,
                    err => {
                        let e = Error::os(call(&path), err);
                        return Err(if matches!(err, libc::EFBIG | libc::ENOSPC) {
                            e.with_status(CONC_ERR_RESOURCE_EXHAUSTED)
                        } else {
                            e
                        });
                    }
                }
            }
            map_shared(fd, size)
                .map_err(|errno| Error::os(format_args!("{}: mmap", call(&path)), errno))
        })();
        close_fd(fd);
        match made {
            Ok(ptr) => Ok(Segment {
                ptr,
                size,
                path,
                unlinked: AtomicBool::new(false),
            }),
            Err(err) => {
                // SAFETY: path is a valid C string naming the segment this
                // call created.
                unsafe { libc::shm_unlink(path.as_ptr()) };
                Err(err)
            }
        }
    }

    /// Attaches to the existing segment `name`, read-write, mapping its
    /// whole real size. A segment of size 0 is `CONC_ERR_INVALID_ARGUMENT`.
    pub(crate) fn open(op: &str, name: &CStr) -> Result<Segment> {
        let path = checked_path(op, name, format_args!(""))?;
        let call = || crate::msg!("{op}({})", ShowName(Some(name)));
        // SAFETY: path is a valid C string.
        let fd = unsafe { libc::shm_open(path.as_ptr(), libc::O_RDWR, 0) };
        if fd < 0 {
            return Err(Error::last_os(call()));
        }
        let mapped = (|| {
            // SAFETY: an all-zero stat is a valid value to be overwritten.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fd is open and st is valid for writes.
            if unsafe { libc::fstat(fd, &mut st) } != 0 {
                return Err(Error::last_os(format_args!("{}: fstat", call())));
            }
            if st.st_size == 0 {
                return Err(Error::invalid(format_args!(
                    "{}: the segment has size 0 (not yet sized by its creator?)",
                    call()
                )));
            }
            let size = usize::try_from(st.st_size).map_err(|_| {
                Error::new(
                    CONC_ERR_RESOURCE_EXHAUSTED,
                    format_args!("{}: the segment is larger than the address space", call()),
                )
            })?;
            let ptr = map_shared(fd, size)
                .map_err(|errno| Error::os(format_args!("{}: mmap", call()), errno))?;
            Ok((ptr, size))
        })();
        close_fd(fd);
        let (ptr, size) = mapped?;
        Ok(Segment {
            ptr,
            size,
            path,
            unlinked: AtomicBool::new(false),
        })
    }

    /// The first byte of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The mapping's size in bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The name, without the leading `/`, as a C string.
    pub(crate) fn name(&self) -> &CStr {
        &self.path.as_c_str()[1..]
    }

    /// Removes the segment's name. A second unlink through the same handle,
    /// or of a name that is gone, is `CONC_ERR_NOT_FOUND`.
    pub(crate) fn unlink(&self, op: &str) -> Result<()> {
        let call = || crate::msg!("{op}({})", ShowName(Some(self.name())));
        if self.unlinked.swap(true, Ordering::AcqRel) {
            return Err(Error::os(call(), libc::ENOENT));
        }
        // SAFETY: path is a valid C string.
        if unsafe { libc::shm_unlink(self.path.as_ptr()) } != 0 {
            let err = Error::last_os(call());
            if err.status != CONC_ERR_NOT_FOUND {
                // Not removed (e.g. EACCES): a later unlink may try again.
                self.unlinked.store(false, Ordering::Release);
            }
            return Err(err);
        }
        Ok(())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: ptr/size are exactly the mapping made in create/open, and
        // this is its only owner.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.size) };
    }
}

/// Removes the name `name` (same rules as create), for
/// `conc_shm_unlink_name` and `conc_list`'s users.
pub(crate) fn unlink_name(op: &str, name: &CStr) -> Result<()> {
    let path = checked_path(op, name, format_args!(""))?;
    // SAFETY: path is a valid C string.
    if unsafe { libc::shm_unlink(path.as_ptr()) } != 0 {
        return Err(Error::last_os(format_args!(
            "{op}({})",
            ShowName(Some(name))
        )));
    }
    Ok(())
}

/// A named shared memory segment mapped into this process: the
/// counterpart of Python's `shared_memory.SharedMemory`. Made by
/// `conc_shm_create` or `conc_shm_open`, released by `conc_shm_close`.
#[allow(non_camel_case_types)]
pub struct conc_shm {
    segment: Segment,
}

impl crate::handle::Object for conc_shm {
    const KIND: crate::handle::Kind = crate::handle::Kind::Shm;
}

/// Creates a new shared memory segment of `size` bytes and maps it.
///
/// `name` follows the naming rules: it may start with one `/` (not part of
/// the name `conc_shm_name` returns), then 1 to 30 characters, each a
/// letter, digit, `_`, `-` or `.`, and is not `.` or `..`. NULL picks a
/// fresh random name, `psm_` and 8 lowercase hex digits, retried on a
/// collision.
///
/// The segment is new (create never attaches to an existing one, whoever
/// made it), readable and writable by its owner only (mode 0600 whatever
/// the umask), and zero-filled. Its memory is reserved here, so a full
/// `/dev/shm` fails now with `CONC_ERR_RESOURCE_EXHAUSTED` rather than
/// with SIGBUS at a later write. (A memory cgroup limit lower than the
/// free space of `/dev/shm` is outside what this can check.) When create
/// fails, no name is left behind.
///
/// Segments live in `/dev/shm`: on a system without it (some minimal
/// containers) create gives `CONC_ERR_NOT_FOUND`.
///
/// On success `*out` is the new handle, owned by the caller until
/// `conc_shm_close`; the segment itself stays until `conc_shm_unlink`.
/// On failure `*out` is NULL.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`out` NULL, bad name, size 0),
/// `CONC_ERR_ALREADY_EXISTS` (the name is taken),
/// `CONC_ERR_RESOURCE_EXHAUSTED` (no space in `/dev/shm`, no memory or
/// descriptors, or a size no segment can have),
/// `CONC_ERR_PERMISSION_DENIED`, `CONC_ERR_IO`.
///
/// # Safety
/// `out` must be NULL or valid for writes; `name` NULL or a NUL-terminated
/// string.
#[no_mangle]
pub unsafe extern "C" fn conc_shm_create(
    out: *mut *mut conc_shm,
    name: *const c_char,
    size: usize,
) -> conc_status {
    const OP: &str = "conc_shm_create";
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
        let segment = Segment::create(OP, name, size, format_args!(", {size}"))?;
        *out = crate::handle::publish(conc_shm { segment })?;
        Ok(())
    })
}

/// Attaches to the existing shared memory segment `name` (same naming
/// rules as `conc_shm_create`; a leading `/` is optional) and maps all of
/// it, readable and writable. `conc_shm_size` then reports the segment's
/// real size.
///
/// On success `*out` is the new handle, owned by the caller until
/// `conc_shm_close`; on failure NULL.
///
/// If another process shrinks the segment while it is mapped, touching the
/// lost pages raises SIGBUS, as with any mapping.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`out` or `name` NULL, bad name, a
/// segment of size 0), `CONC_ERR_NOT_FOUND` (no such segment),
/// `CONC_ERR_PERMISSION_DENIED` (this user may not read and write it),
/// `CONC_ERR_RESOURCE_EXHAUSTED`, `CONC_ERR_IO`.
///
/// # Safety
/// `out` must be NULL or valid for writes; `name` NULL or a NUL-terminated
/// string.
#[no_mangle]
pub unsafe extern "C" fn conc_shm_open(
    out: *mut *mut conc_shm,
    name: *const c_char,
) -> conc_status {
    const OP: &str = "conc_shm_open";
    guard(OP, || {
        // SAFETY: out is NULL or valid for writes (caller contract).
        let out = unsafe { out_ref(out, OP, "out") }?;
        *out = ptr::null_mut();
        // SAFETY: name is NULL or NUL-terminated (caller contract).
        let name = unsafe { c_str(name, OP, "name") }?;
        let segment = Segment::open(OP, name)?;
        *out = crate::handle::publish(conc_shm { segment })?;
        Ok(())
    })
}

/// Returns the first byte of the segment's mapping, shared with every
/// process that maps it; `conc_shm_size(shm)` bytes are readable and
/// writable. Valid until `conc_shm_close`, even after an unlink. NULL when
/// `shm` is NULL.
///
/// # Safety
/// `shm` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn conc_shm_buf(shm: *const conc_shm) -> *mut u8 {
    guard_value("conc_shm_buf", ptr::null_mut(), || {
        crate::handle::lookup(shm).map_or(ptr::null_mut(), |s| s.segment.as_ptr())
    })
}

/// Returns the segment's size in bytes: the size given to create, or the
/// real size found by open. 0 when `shm` is NULL.
///
/// # Safety
/// `shm` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn conc_shm_size(shm: *const conc_shm) -> usize {
    guard_value("conc_shm_size", 0, || {
        crate::handle::lookup(shm).map_or(0, |s| s.segment.size())
    })
}

/// Returns the segment's name without a leading `/` (e.g.
/// `"psm_1f2e3d4c"`), the name other processes pass to `conc_shm_open`.
/// Owned by the handle, valid until `conc_shm_close`. `""` when `shm` is
/// NULL.
///
/// # Safety
/// `shm` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn conc_shm_name(shm: *const conc_shm) -> *const c_char {
    guard_value("conc_shm_name", c"".as_ptr(), || {
        crate::handle::lookup(shm).map_or(c"".as_ptr(), |s| s.segment.name().as_ptr())
    })
}

/// Removes the segment's name, as Python's `SharedMemory.unlink`: no
/// process can attach to it any more, and its memory goes back to the OS
/// once every process has closed it. Mappings, this one included, stay
/// usable until closed. Call it once, from one process.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`shm` NULL), `CONC_ERR_NOT_FOUND`
/// (this handle unlinked it already, or the name is gone),
/// `CONC_ERR_PERMISSION_DENIED`, `CONC_ERR_IO`. If the name was removed
/// elsewhere and then taken by a new segment, this removes the new one's
/// name, as `shm_unlink` would.
///
/// # Safety
/// `shm` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn conc_shm_unlink(shm: *const conc_shm) -> conc_status {
    const OP: &str = "conc_shm_unlink";
    guard(OP, || {
        let shm = crate::handle::get(shm, OP, "shm")?;
        shm.segment.unlink(OP)
    })
}

/// Removes the name of the segment `name` (same naming rules as
/// `conc_shm_create`), without attaching to it.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` (`name` NULL or bad),
/// `CONC_ERR_NOT_FOUND` (no such segment), `CONC_ERR_PERMISSION_DENIED`,
/// `CONC_ERR_IO`.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn conc_shm_unlink_name(name: *const c_char) -> conc_status {
    const OP: &str = "conc_shm_unlink_name";
    guard(OP, || {
        // SAFETY: name is NULL or NUL-terminated (caller contract).
        let name = unsafe { c_str(name, OP, "name") }?;
        unlink_name(OP, name)
    })
}

/// Unmaps the segment and frees the handle; the segment and its name stay
/// (see `conc_shm_unlink`). Pointers from `conc_shm_buf` and
/// `conc_shm_name` are invalid afterwards.
///
/// NULL is a no-op returning `CONC_OK`. Errors: `CONC_ERR_INVALID_STATE`
/// for a handle closed already, or never made by conc (it is left alone).
/// The check is a safety net, not a licence: once a handle is closed, conc
/// may hand out its address again for a new segment handle, which a second close
/// of the stale pointer would then close.
///
/// # Safety
/// `shm` must be NULL or a pointer from `conc_shm_create`/`conc_shm_open`;
/// no other thread may be using the handle.
#[no_mangle]
pub unsafe extern "C" fn conc_shm_close(shm: *mut conc_shm) -> conc_status {
    const OP: &str = "conc_shm_close";
    guard(OP, || {
        if shm.is_null() {
            return Ok(());
        }
        drop(crate::handle::release(shm, OP, "shm")?);
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::*;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    /// Held (shared) by every test that adds segments: the C test programs
    /// hold it exclusively while they compare /dev/shm before and after.
    pub(crate) fn shm_lock() -> std::fs::File {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open("/tmp/conc-dev-shm-tests.lock")
            .expect("open the /dev/shm test lock");
        // SAFETY: a valid open descriptor.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH) };
        assert_eq!(r, 0, "flock");
        file
    }

    /// A name no other test (or test run) uses: `ct<pid>_<tag>`.
    pub(crate) fn unique(tag: &str) -> CString {
        CString::new(format!("ct{}_{tag}", std::process::id())).unwrap()
    }

    pub(crate) fn in_dev_shm(name: &CStr) -> bool {
        Path::new("/dev/shm").join(name.to_str().unwrap()).exists()
    }

    fn create(name: Option<&CStr>, size: usize) -> (conc_status, *mut conc_shm) {
        let mut out = std::ptr::dangling_mut::<conc_shm>();
        let name = name.map_or(ptr::null(), CStr::as_ptr);
        // SAFETY: out is valid; name is NULL or a C string.
        let st = unsafe { conc_shm_create(&mut out, name, size) };
        (st, out)
    }

    fn open(name: &CStr) -> (conc_status, *mut conc_shm) {
        let mut out = std::ptr::dangling_mut::<conc_shm>();
        // SAFETY: out is valid; name is a C string.
        let st = unsafe { conc_shm_open(&mut out, name.as_ptr()) };
        (st, out)
    }

    fn name_of(shm: *const conc_shm) -> CString {
        // SAFETY: a live handle or NULL; the name is a C string.
        unsafe { CStr::from_ptr(conc_shm_name(shm)) }.to_owned()
    }

    #[test]
    fn name_rules() {
        let ok = |s: &str| segment_path(&CString::new(s).unwrap());
        assert_eq!(ok("abc").unwrap().as_bytes(), b"/abc");
        assert_eq!(ok("/abc").unwrap().as_bytes(), b"/abc");
        assert_eq!(ok("a.b-c_D9").unwrap().as_bytes(), b"/a.b-c_D9");
        assert!(ok(&"x".repeat(30)).is_ok());
        assert!(ok(&format!("/{}", "x".repeat(30))).is_ok());
        assert!(ok("...").is_ok());
        for bad in [
            "",
            "/",
            "//a",
            "a/b",
            "a/",
            ".",
            "..",
            "/.",
            "/..",
            "bad name",
            "tab\there",
            "é",
            "a*b",
        ] {
            assert!(ok(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(ok(&"x".repeat(31)).is_err());
    }

    #[test]
    fn random_name_create_open_share_unlink_close() {
        let _lock = shm_lock();
        let (st, a) = create(None, 100);
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        let name = name_of(a);
        let text = name.to_str().unwrap();
        assert_eq!(text.len(), 12, "{text}");
        assert!(text.starts_with("psm_"));
        assert!(text[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let meta = std::fs::metadata(Path::new("/dev/shm").join(text)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 100);
        // SAFETY: a live handle.
        let (buf, size) = unsafe { (conc_shm_buf(a), conc_shm_size(a)) };
        assert_eq!(size, 100);
        // SAFETY: buf is valid for 100 bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(buf, size) };
        assert!(bytes.iter().all(|&b| b == 0));
        bytes[7] = 42;

        let (st, b) = open(&name);
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        // SAFETY: live handles.
        unsafe {
            assert_eq!(conc_shm_size(b), 100);
            assert_eq!(*conc_shm_buf(b).add(7), 42);
            assert_ne!(conc_shm_buf(b), buf);
            assert_eq!(conc_shm_unlink(b), CONC_OK);
            assert!(!in_dev_shm(&name));
            assert_eq!(conc_shm_unlink(a), CONC_ERR_NOT_FOUND);
            assert_eq!(conc_shm_unlink(b), CONC_ERR_NOT_FOUND);
            assert!(last_error_message().contains("ENOENT"));
            // Still mapped and shared after the unlink.
            *conc_shm_buf(b).add(8) = 9;
            assert_eq!(*buf.add(8), 9);
            assert_eq!(conc_shm_close(b), CONC_OK);
            assert_eq!(conc_shm_close(a), CONC_OK);
            assert_eq!(conc_shm_close(a), CONC_ERR_INVALID_STATE);
            assert_eq!(conc_shm_close(ptr::null_mut()), CONC_OK);
        }
    }

    #[test]
    fn named_create_refuses_existing_and_strips_slash() {
        let _lock = shm_lock();
        let name = unique("named");
        let slashed = CString::new(format!("/{}", name.to_str().unwrap())).unwrap();
        let (st, a) = create(Some(&slashed), 10);
        assert_eq!(st, CONC_OK, "{}", last_error_message());
        assert_eq!(name_of(a), name);
        let (st, b) = create(Some(&name), 10);
        assert_eq!(st, CONC_ERR_ALREADY_EXISTS);
        assert!(b.is_null());
        let msg = last_error_message();
        assert!(
            msg.starts_with(&format!(
                "conc_shm_create(\"{}\", 10): ",
                name.to_str().unwrap()
            )),
            "{msg}"
        );
        assert!(msg.ends_with("(EEXIST)"), "{msg}");
        // SAFETY: name is a C string; a is live.
        unsafe {
            assert_eq!(conc_shm_unlink_name(slashed.as_ptr()), CONC_OK);
            assert_eq!(conc_shm_unlink_name(name.as_ptr()), CONC_ERR_NOT_FOUND);
            assert_eq!(conc_shm_close(a), CONC_OK);
        }
    }

    #[test]
    fn bad_arguments() {
        let _lock = shm_lock();
        let (st, p) = create(Some(c"a/b"), 10);
        assert_eq!((st, p.is_null()), (CONC_ERR_INVALID_ARGUMENT, true));
        assert_eq!(
            last_error_message(),
            "conc_shm_create(\"a/b\", 10): invalid shared memory name: only one '/', at the start, is allowed"
        );
        let name = unique("zero");
        let (st, p) = create(Some(&name), 0);
        assert_eq!((st, p.is_null()), (CONC_ERR_INVALID_ARGUMENT, true));
        assert!(last_error_message().contains("size is 0"));
        assert!(!in_dev_shm(&name));
        // SAFETY: NULL pointers are refused before use.
        unsafe {
            assert_eq!(
                conc_shm_create(ptr::null_mut(), ptr::null(), 1),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                conc_shm_open(ptr::null_mut(), c"x".as_ptr()),
                CONC_ERR_INVALID_ARGUMENT
            );
            let mut out = std::ptr::dangling_mut::<conc_shm>();
            assert_eq!(
                conc_shm_open(&mut out, ptr::null()),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert!(out.is_null());
            assert_eq!(conc_shm_unlink(ptr::null()), CONC_ERR_INVALID_ARGUMENT);
            assert_eq!(conc_shm_unlink_name(ptr::null()), CONC_ERR_INVALID_ARGUMENT);
            assert_eq!(
                conc_shm_unlink_name(c"..".as_ptr()),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert!(conc_shm_buf(ptr::null()).is_null());
            assert_eq!(conc_shm_size(ptr::null()), 0);
            assert_eq!(name_of(ptr::null()).as_bytes(), b"");
            // A pointer conc never made.
            let mut fake = 0u64;
            assert_eq!(
                conc_shm_close((&mut fake as *mut u64).cast()),
                CONC_ERR_INVALID_STATE
            );
        }
    }

    #[test]
    fn open_missing_names_the_call() {
        let _lock = shm_lock();
        let name = unique("missing");
        let (st, p) = open(&name);
        assert_eq!((st, p.is_null()), (CONC_ERR_NOT_FOUND, true));
        assert_eq!(
            last_error_message(),
            format!(
                "conc_shm_open(\"{}\"): No such file or directory (ENOENT)",
                name.to_str().unwrap()
            )
        );
        assert_eq!(crate::error::conc_last_os_error(), libc::ENOENT);
    }

    #[test]
    fn open_of_size_zero_segment_is_refused() {
        let _lock = shm_lock();
        let name = unique("empty");
        let path = segment_path(&name).unwrap();
        // SAFETY: path is a C string.
        let fd = unsafe { libc::shm_open(path.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o600) };
        assert!(fd >= 0);
        close_fd(fd);
        let (st, p) = open(&name);
        assert_eq!((st, p.is_null()), (CONC_ERR_INVALID_ARGUMENT, true));
        assert!(last_error_message().contains("size 0"));
        // SAFETY: name is a C string.
        assert_eq!(unsafe { conc_shm_unlink_name(name.as_ptr()) }, CONC_OK);
    }

    #[test]
    fn huge_sizes_are_exhausted_and_leave_no_name() {
        let _lock = shm_lock();
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid path and out pointer.
        let limited =
            unsafe { libc::statvfs(c"/dev/shm".as_ptr(), &mut vfs) } == 0 && vfs.f_blocks > 0;
        let mut sizes = vec![usize::MAX];
        if limited {
            // Larger than the whole file system: refused before any page is
            // allocated. (An unlimited tmpfs would try to allocate it.)
            sizes.push(usize::MAX / 2);
            sizes.push((vfs.f_blocks as usize) * (vfs.f_frsize as usize) + 4096);
        }
        for (i, size) in sizes.into_iter().enumerate() {
            let name = unique(&format!("huge{i}"));
            let (st, p) = create(Some(&name), size);
            assert_eq!(
                st,
                CONC_ERR_RESOURCE_EXHAUSTED,
                "{size}: {}",
                last_error_message()
            );
            assert!(p.is_null());
            assert!(!in_dev_shm(&name), "{size} left its name behind");
        }
    }
}
