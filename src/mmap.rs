//! Memory-mapped files: `conc_mmap`, the port of Python's `mmap` object.
//!
//! A map covers a range of a regular file (or anonymous shared memory).
//! `open_range` accepts any offset: the OS mapping starts at the page below
//! it and the handle keeps the distance, so `data` points at the first
//! requested byte. A range of length 0 (an empty file, or an offset at the
//! end) maps nothing: `data` is then a non-NULL dangling pointer, never
//! read. The file descriptor is closed once the map exists; the map keeps
//! the file's pages alive by itself.
//!
//! The cursor used by `read_byte`, `readline`, `seek` and `tell` is an
//! atomic, so that two threads misusing one handle get interleaved lines,
//! not undefined behaviour; the contract is still one handle per thread.

use std::ffi::{c_char, c_void, CStr};
use std::fmt;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::error::{
    conc_status, Error, Result, CONC_ERR_INVALID_ARGUMENT, CONC_ERR_IO, CONC_ERR_OUT_OF_RANGE,
    CONC_ERR_RESOURCE_EXHAUSTED, CONC_ERR_UNSUPPORTED,
};
use crate::ffi;

/// How a file is mapped.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum conc_access {
    /// Read only: `conc_mmap_data_mut` returns NULL.
    CONC_ACCESS_READ = 0,
    /// Shared: writes through `conc_mmap_data_mut` reach the file
    /// (`conc_mmap_flush` forces them to storage) and are seen by every
    /// other process that maps or reads it.
    CONC_ACCESS_WRITE = 1,
    /// Private copy-on-write: the map is writable, the file never changes.
    CONC_ACCESS_COPY = 2,
}

pub use conc_access::*;

/// Where `conc_mmap_seek` counts its offset from, as `SEEK_SET`,
/// `SEEK_CUR` and `SEEK_END` do (and Python's `os.SEEK_*`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum conc_whence {
    /// From the start of the map.
    CONC_SEEK_SET = 0,
    /// From the cursor.
    CONC_SEEK_CUR = 1,
    /// From the end of the map.
    CONC_SEEK_END = 2,
}

pub use conc_whence::*;

/// A `conc_access` as it arrives from C: any integer, checked before use.
/// Spelled `conc_access` in the header.
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct RawAccess(pub u32);

/// A `conc_whence` as it arrives from C: any integer, checked before use.
/// Spelled `conc_whence` in the header.
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct RawWhence(pub u32);

impl RawAccess {
    fn get(self, op: &dyn fmt::Display) -> Result<conc_access> {
        match self.0 {
            0 => Ok(CONC_ACCESS_READ),
            1 => Ok(CONC_ACCESS_WRITE),
            2 => Ok(CONC_ACCESS_COPY),
            v => Err(Error::invalid(format!(
                "{op}: unknown conc_access value {} (expected CONC_ACCESS_READ, \
                 CONC_ACCESS_WRITE or CONC_ACCESS_COPY)",
                v as i32
            ))),
        }
    }
}

impl RawWhence {
    fn get(self, op: &dyn fmt::Display) -> Result<conc_whence> {
        match self.0 {
            0 => Ok(CONC_SEEK_SET),
            1 => Ok(CONC_SEEK_CUR),
            2 => Ok(CONC_SEEK_END),
            v => Err(Error::invalid(format!(
                "{op}: unknown conc_whence value {} (expected CONC_SEEK_SET, \
                 CONC_SEEK_CUR or CONC_SEEK_END)",
                v as i32
            ))),
        }
    }
}

/// A memory-mapped file, or anonymous shared memory: an opaque handle made
/// by `conc_mmap_open`, `conc_mmap_open_range` or `conc_mmap_anonymous`
/// and released by `conc_mmap_close`.
///
/// The bytes are at `conc_mmap_data(map)` for `conc_mmap_len(map)` bytes,
/// valid until the close. The handle also has a cursor, used by
/// `conc_mmap_read_byte`, `conc_mmap_readline`, `conc_mmap_seek` and
/// `conc_mmap_tell` like a file position.
///
/// Threads: every function may be called from any thread, and several
/// threads may read the bytes of one map at once. The cursor belongs to the
/// handle, so use one handle per thread for `readline`/`read_byte`/`seek`
/// (open the file once per thread): two threads sharing a cursor get
/// interleaved lines. Do not close a map while another thread still uses
/// it.
///
/// Hazard (a property of mmap itself): if another process truncates the
/// file while it is mapped, touching a page past the new end raises SIGBUS,
/// which kills the process unless it handles that signal. conc never
/// changes a file's size; a program that maps files others may shrink must
/// arrange with them not to (e.g. with advisory locks) or handle SIGBUS.
#[allow(non_camel_case_types)]
pub struct conc_mmap {
    /// The start of the OS mapping (page aligned), NULL when nothing is
    /// mapped (length 0).
    base: *mut c_void,
    /// The length of the OS mapping: `delta + len`.
    map_len: usize,
    /// The first byte of the map: `base + delta`, or dangling when `len == 0`.
    data: *mut u8,
    /// The number of bytes of the map.
    len: usize,
    /// The cursor: always within `0..=len`.
    cursor: AtomicUsize,
    access: conc_access,
    /// What error messages name: `"path"` or `anonymous, N bytes`.
    label: String,
    /// True for anonymous maps, which have no file to flush to.
    anonymous: bool,
}

impl crate::handle::Object for conc_mmap {
    const KIND: crate::handle::Kind = crate::handle::Kind::Mmap;
}

// SAFETY: the handle owns its mapping; the pointers are addresses of memory
// that stays mapped until the handle is dropped, and the only mutable state
// (the cursor) is atomic.
unsafe impl Send for conc_mmap {}
// SAFETY: as above; shared access only reads the mapping's addresses.
unsafe impl Sync for conc_mmap {}

impl conc_mmap {
    fn empty(access: conc_access, label: String) -> conc_mmap {
        conc_mmap {
            base: ptr::null_mut(),
            map_len: 0,
            data: NonNull::dangling().as_ptr(),
            len: 0,
            cursor: AtomicUsize::new(0),
            access,
            label,
            anonymous: false,
        }
    }

    /// The bytes of the map.
    fn bytes(&self) -> &[u8] {
        // SAFETY: `data` is valid for reads of `len` bytes while the mapping
        // lives (or dangling and aligned with `len == 0`). Other processes or
        // threads writing the shared pages at the same time is the usual mmap
        // caveat: the bytes are plain data, any value is valid.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }

    /// `op("path")`, for error messages.
    fn ctx(&self, op: &str) -> String {
        format!("{op}({})", self.label)
    }

    fn cursor(&self) -> usize {
        self.cursor.load(Ordering::Relaxed).min(self.len)
    }

    fn writable(&self) -> bool {
        self.access != CONC_ACCESS_READ
    }

    /// Unmaps the pages; the handle is then an empty map.
    fn unmap(&mut self) -> std::result::Result<(), i32> {
        if self.base.is_null() {
            return Ok(());
        }
        // SAFETY: `base`/`map_len` describe a mapping this handle made and
        // still owns; nothing reads it after this point.
        let rc = unsafe { libc::munmap(self.base, self.map_len) };
        self.base = ptr::null_mut();
        self.map_len = 0;
        self.data = NonNull::dangling().as_ptr();
        self.len = 0;
        if rc == 0 {
            Ok(())
        } else {
            Err(crate::error::errno())
        }
    }
}

impl Drop for conc_mmap {
    fn drop(&mut self) {
        let _ = self.unmap();
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        page as u64
    } else {
        4096
    }
}

/// The error of a failed `mmap` call: `ENODEV` means the file system cannot
/// map files, which is "unsupported" here rather than "not found".
fn mmap_error(ctx: &str, errno: i32) -> Error {
    let err = Error::os(ctx, errno);
    if errno == libc::ENODEV {
        err.with_status(CONC_ERR_UNSUPPORTED)
    } else {
        err
    }
}

/// Maps `length` bytes (0: to the end) of `path` from `offset`.
fn open_file(
    ctx: &str,
    path: &CStr,
    access: conc_access,
    offset: u64,
    length: usize,
) -> Result<conc_mmap> {
    let label = format!("\"{}\"", path.to_string_lossy());
    // O_NONBLOCK: opening a FIFO must not wait for a writer before being
    // refused below; O_NOCTTY: opening a terminal must not make it the
    // process's controlling terminal. Neither changes regular files.
    let file = OpenOptions::new()
        .read(true)
        .write(access == CONC_ACCESS_WRITE)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(std::ffi::OsStr::from_bytes(path.to_bytes()))
        .map_err(|e| match e.raw_os_error().unwrap_or(libc::EIO) {
            // A unix socket cannot be opened at all.
            libc::ENXIO => Error {
                status: CONC_ERR_INVALID_ARGUMENT,
                message: format!("{ctx}: not a regular file (only regular files can be mapped)"),
                os_error: libc::ENXIO,
            },
            errno => Error::os(ctx, errno),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::os(ctx, e.raw_os_error().unwrap_or(libc::EIO)))?;
    if meta.is_dir() {
        return Err(Error::invalid(format!("{ctx}: is a directory")));
    }
    if !meta.is_file() {
        return Err(Error::invalid(format!(
            "{ctx}: not a regular file (only regular files can be mapped)"
        )));
    }
    let size = meta.len();
    if offset > size {
        return Err(Error::new(
            CONC_ERR_OUT_OF_RANGE,
            format!("{ctx}: offset {offset} is past the end of the file ({size} bytes)"),
        ));
    }
    let len64 = if length == 0 {
        size - offset
    } else {
        match offset.checked_add(length as u64) {
            Some(end) if end <= size => length as u64,
            _ => {
                return Err(Error::new(
                    CONC_ERR_OUT_OF_RANGE,
                    format!(
                        "{ctx}: offset {offset} + length {length} reaches past the end of the \
                         file ({size} bytes)"
                    ),
                ))
            }
        }
    };
    if len64 == 0 {
        return Ok(conc_mmap::empty(access, label));
    }
    let page = page_size();
    let aligned = offset - offset % page;
    let delta = (offset - aligned) as usize;
    let too_large = || {
        Error::new(
            CONC_ERR_RESOURCE_EXHAUSTED,
            format!("{ctx}: {len64} bytes do not fit in this address space"),
        )
    };
    let len = usize::try_from(len64).map_err(|_| too_large())?;
    let map_len = len.checked_add(delta).ok_or_else(too_large)?;
    let file_offset = libc::off_t::try_from(aligned).map_err(|_| too_large())?;
    let (prot, flags) = match access {
        CONC_ACCESS_READ => (libc::PROT_READ, libc::MAP_SHARED),
        CONC_ACCESS_WRITE => (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED),
        CONC_ACCESS_COPY => (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE),
    };
    // SAFETY: a fresh mapping chosen by the kernel (addr NULL) of a file
    // descriptor we own; map_len > 0.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            map_len,
            prot,
            flags,
            file.as_raw_fd(),
            file_offset,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(mmap_error(ctx, crate::error::errno()));
    }
    // The mapping keeps the file's pages; the descriptor closes with `file`.
    Ok(conc_mmap {
        base,
        map_len,
        // SAFETY: delta < page <= map_len, inside the mapping.
        data: unsafe { base.cast::<u8>().add(delta) },
        len,
        cursor: AtomicUsize::new(0),
        access,
        label,
        anonymous: false,
    })
}

/// Shared by `conc_mmap_open` and `conc_mmap_open_range`.
///
/// # Safety
/// As for `conc_mmap_open_range`.
unsafe fn open_common(
    op: &'static str,
    out: *mut *mut conc_mmap,
    path: *const c_char,
    access: RawAccess,
    range: Option<(u64, usize)>,
) -> conc_status {
    ffi::guard(op, || {
        // SAFETY: `out` is NULL or writable, per the caller's contract.
        let out = unsafe { ffi::out_ref(out, op, "out") }?;
        *out = ptr::null_mut();
        // SAFETY: `path` is NULL or a C string, per the caller's contract.
        let path = unsafe { ffi::c_str(path, op, "path") }?;
        let ctx = match range {
            None => format!("{op}(\"{}\")", path.to_string_lossy()),
            Some((offset, length)) => format!(
                "{op}(\"{}\", offset {offset}, length {length})",
                path.to_string_lossy()
            ),
        };
        let access = access.get(&ctx)?;
        let (offset, length) = range.unwrap_or((0, 0));
        let map = open_file(&ctx, path, access, offset, length)?;
        *out = crate::handle::publish(map)?;
        Ok(())
    })
}

/// Maps the whole file `path` into memory and stores the new handle in
/// `*out` (NULL on failure). The map and its cursor (at 0) belong to the
/// caller until `conc_mmap_close`.
///
/// `access` is `CONC_ACCESS_READ` (the file is opened read-only),
/// `CONC_ACCESS_WRITE` (opened read-write; writes through
/// `conc_mmap_data_mut` reach the file) or `CONC_ACCESS_COPY` (opened
/// read-only; writes stay private to this map). Only regular files can be
/// mapped. An empty file gives a valid map of length 0. The file's size is
/// never changed.
///
/// Hazard: if another process truncates the file while it is mapped,
/// touching the lost pages raises SIGBUS (see `conc_mmap`).
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `out` or `path` is NULL, `access`
/// is not a `conc_access` value, or `path` is a directory or not a regular
/// file; `CONC_ERR_NOT_FOUND` if the file does not exist;
/// `CONC_ERR_PERMISSION_DENIED` if the OS refuses to open it for `access`;
/// `CONC_ERR_RESOURCE_EXHAUSTED` when out of memory or descriptors;
/// `CONC_ERR_UNSUPPORTED` if its file system cannot map files;
/// `CONC_ERR_IO` for other OS failures.
///
/// # Safety
/// `out` must be NULL or valid for writing a pointer; `path` must be NULL
/// or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_open(
    out: *mut *mut conc_mmap,
    path: *const c_char,
    access: RawAccess,
) -> conc_status {
    // SAFETY: forwarded caller contract.
    unsafe { open_common("conc_mmap_open", out, path, access, None) }
}

/// Maps `length` bytes of the file `path` starting at byte `offset`, or
/// everything from `offset` to the end when `length` is 0, and stores the
/// new handle in `*out` (NULL on failure).
///
/// `offset` may be any byte offset, not only a multiple of the page size:
/// `conc_mmap_data` points at byte `offset` of the file and
/// `conc_mmap_len` is the length of the range. An offset equal to the
/// file's size with `length` 0 gives an empty map. `access` is as for
/// `conc_mmap_open`. The file's size is never changed.
///
/// Errors: as `conc_mmap_open`, plus `CONC_ERR_OUT_OF_RANGE` if `offset` is
/// past the end of the file or `offset + length` reaches past it.
///
/// # Safety
/// `out` must be NULL or valid for writing a pointer; `path` must be NULL
/// or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_open_range(
    out: *mut *mut conc_mmap,
    path: *const c_char,
    access: RawAccess,
    offset: u64,
    length: usize,
) -> conc_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        open_common(
            "conc_mmap_open_range",
            out,
            path,
            access,
            Some((offset, length)),
        )
    }
}

/// Maps `length` bytes of zero-filled anonymous memory, readable and
/// writable, and stores the new handle in `*out` (NULL on failure).
///
/// The memory is shared with the children this process forks afterwards
/// (as Python's anonymous maps are): a write by either side is seen by the
/// other. `conc_mmap_flush` does nothing on it.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `out` is NULL or `length` is 0;
/// `CONC_ERR_RESOURCE_EXHAUSTED` if the OS is out of memory.
///
/// # Safety
/// `out` must be NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_anonymous(
    out: *mut *mut conc_mmap,
    length: usize,
) -> conc_status {
    const OP: &str = "conc_mmap_anonymous";
    ffi::guard(OP, || {
        // SAFETY: `out` is NULL or writable, per the caller's contract.
        let out = unsafe { ffi::out_ref(out, OP, "out") }?;
        *out = ptr::null_mut();
        let ctx = format!("{OP}({length})");
        if length == 0 {
            return Err(Error::invalid(format!("{ctx}: length is 0")));
        }
        // SAFETY: a fresh anonymous mapping chosen by the kernel; length > 0.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                length,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(mmap_error(&ctx, crate::error::errno()));
        }
        let map = conc_mmap {
            base,
            map_len: length,
            data: base.cast(),
            len: length,
            cursor: AtomicUsize::new(0),
            access: CONC_ACCESS_WRITE,
            label: format!("anonymous, {length} bytes"),
            anonymous: true,
        };
        *out = crate::handle::publish(map)?;
        Ok(())
    })
}

/// Returns the first byte of the map, valid for `conc_mmap_len(map)` bytes
/// until `conc_mmap_close`. Never NULL for an open map, even of length 0
/// (then it must not be read). NULL if `map` is NULL.
///
/// # Safety
/// `map` must be NULL or an open map.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_data(map: *const conc_mmap) -> *const u8 {
    ffi::guard_value("conc_mmap_data", ptr::null(), || {
        crate::handle::lookup(map).map_or(ptr::null(), |m| m.data.cast_const())
    })
}

/// Returns the first byte of the map for writing, like `conc_mmap_data`:
/// for a `CONC_ACCESS_WRITE` map the writes reach the file, for a
/// `CONC_ACCESS_COPY` map they stay private, anonymous maps are writable.
/// NULL for a `CONC_ACCESS_READ` map (writing it would crash) or if `map`
/// is NULL. Never NULL for a writable map, even of length 0.
///
/// # Safety
/// `map` must be NULL or an open map.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_data_mut(map: *mut conc_mmap) -> *mut u8 {
    ffi::guard_value(
        "conc_mmap_data_mut",
        ptr::null_mut(),
        || match crate::handle::lookup(map) {
            Some(m) if m.writable() => m.data,
            _ => ptr::null_mut(),
        },
    )
}

/// Returns the number of bytes of the map; 0 if `map` is NULL.
///
/// # Safety
/// `map` must be NULL or an open map.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_len(map: *const conc_mmap) -> usize {
    ffi::guard_value("conc_mmap_len", 0, || {
        crate::handle::lookup(map).map_or(0, |m| m.len)
    })
}

/// Stores the byte at the cursor in `*byte` and moves the cursor past it,
/// like Python's `read_byte()`.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` or `byte` is NULL;
/// `CONC_ERR_OUT_OF_RANGE` if the cursor is at the end (`*byte` unchanged).
///
/// # Safety
/// `map` must be NULL or an open map; `byte` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_read_byte(map: *mut conc_mmap, byte: *mut u8) -> conc_status {
    const OP: &str = "conc_mmap_read_byte";
    ffi::guard(OP, || {
        let m = crate::handle::get(map.cast_const(), OP, "map")?;
        // SAFETY: `byte` is NULL or writable, per the caller's contract.
        let byte = unsafe { ffi::out_ref(byte, OP, "byte") }?;
        let pos = m.cursor();
        match m.bytes().get(pos) {
            Some(&b) => {
                *byte = b;
                m.cursor.store(pos + 1, Ordering::Relaxed);
                Ok(())
            }
            None => Err(Error::new(
                CONC_ERR_OUT_OF_RANGE,
                format!("{}: the cursor is at the end ({pos} bytes)", m.ctx(OP)),
            )),
        }
    })
}

/// Returns the next line: stores in `*line` a pointer into the map at the
/// cursor and in `*len` the number of bytes through the next `'\n'`
/// (included), or to the end when no `'\n'` follows, and moves the cursor
/// past them, like Python's `readline()`. At the end it returns `CONC_OK`
/// with `*len == 0` (and `*line` pointing at the end), so a loop reads
/// until `*len == 0`. The line is not NUL-terminated and stays valid until
/// `conc_mmap_close`. The cursor belongs to the handle: use one handle per
/// thread for readline loops.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map`, `line` or `len` is NULL.
///
/// # Safety
/// `map` must be NULL or an open map; `line` and `len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_readline(
    map: *mut conc_mmap,
    line: *mut *const u8,
    len: *mut usize,
) -> conc_status {
    const OP: &str = "conc_mmap_readline";
    ffi::guard(OP, || {
        let m = crate::handle::get(map.cast_const(), OP, "map")?;
        // SAFETY: `line` is NULL or writable, per the caller's contract.
        let line = unsafe { ffi::out_ref(line, OP, "line") }?;
        // SAFETY: `len` is NULL or writable, per the caller's contract.
        let len = unsafe { ffi::out_ref(len, OP, "len") }?;
        let pos = m.cursor();
        let rest = &m.bytes()[pos..];
        let n = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        *line = rest.as_ptr();
        *len = n;
        m.cursor.store(pos + n, Ordering::Relaxed);
        Ok(())
    })
}

/// Moves the cursor to `offset` counted from `whence` (the start, the
/// cursor or the end), like `fseek` and Python's `seek()`. The new position
/// must be within `0..=conc_mmap_len(map)`.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` is NULL or `whence` is not
/// a `conc_whence` value; `CONC_ERR_OUT_OF_RANGE` if the position would be
/// before the start or past the end. On failure the cursor stays where it
/// was.
///
/// # Safety
/// `map` must be NULL or an open map.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_seek(
    map: *mut conc_mmap,
    offset: i64,
    whence: RawWhence,
) -> conc_status {
    const OP: &str = "conc_mmap_seek";
    ffi::guard(OP, || {
        let m = crate::handle::get(map.cast_const(), OP, "map")?;
        let ctx = m.ctx(OP);
        let origin = match whence.get(&ctx)? {
            CONC_SEEK_SET => 0,
            CONC_SEEK_CUR => m.cursor(),
            CONC_SEEK_END => m.len,
        };
        let target = origin as i128 + offset as i128;
        if target < 0 || target > m.len as i128 {
            return Err(Error::new(
                CONC_ERR_OUT_OF_RANGE,
                format!(
                    "{ctx}: offset {offset} from {origin} gives {target}, outside 0..={}",
                    m.len
                ),
            ));
        }
        m.cursor.store(target as usize, Ordering::Relaxed);
        Ok(())
    })
}

/// Returns the cursor: the offset, from the start of the map, that the next
/// `conc_mmap_read_byte` or `conc_mmap_readline` reads. 0 if `map` is NULL.
///
/// # Safety
/// `map` must be NULL or an open map.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_tell(map: *const conc_mmap) -> u64 {
    ffi::guard_value("conc_mmap_tell", 0, || {
        crate::handle::lookup(map).map_or(0, |m| m.cursor() as u64)
    })
}

/// The common part of find and rfind.
///
/// # Safety
/// As for `conc_mmap_find`.
unsafe fn search(
    op: &'static str,
    map: *const conc_mmap,
    needle: *const c_void,
    needle_len: usize,
    start: u64,
    position: *mut i64,
    reverse: bool,
) -> conc_status {
    ffi::guard(op, || {
        let m = crate::handle::get(map, op, "map")?;
        // SAFETY: `needle` is NULL or readable for `needle_len` bytes.
        let needle = unsafe { ffi::bytes(needle.cast(), needle_len, op, "needle") }?;
        // SAFETY: `position` is NULL or writable, per the caller's contract.
        let position = unsafe { ffi::out_ref(position, op, "position") }?;
        let hay = m.bytes();
        let found = match usize::try_from(start) {
            Ok(start) if start <= hay.len() => {
                let tail = &hay[start..];
                let at = if needle.is_empty() {
                    Some(0)
                } else if reverse {
                    memchr::memmem::rfind(tail, needle)
                } else {
                    memchr::memmem::find(tail, needle)
                };
                at.map(|i| i + start)
            }
            _ => None,
        };
        *position = found.map_or(-1, |i| i as i64);
        Ok(())
    })
}

/// Finds the first occurrence of the `needle_len` bytes at `needle` that
/// starts at or after offset `start`, and stores its offset from the start
/// of the map in `*position`, or -1 if there is none, like Python's
/// `find(sub, start)`. An empty needle matches at `start`; a `start` past
/// the end gives -1. `needle` may be NULL when `needle_len` is 0.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` or `position` is NULL, or
/// `needle` is NULL with `needle_len > 0`.
///
/// # Safety
/// `map` must be NULL or an open map; `needle` NULL or readable for
/// `needle_len` bytes; `position` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_find(
    map: *const conc_mmap,
    needle: *const c_void,
    needle_len: usize,
    start: u64,
    position: *mut i64,
) -> conc_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        search(
            "conc_mmap_find",
            map,
            needle,
            needle_len,
            start,
            position,
            false,
        )
    }
}

/// Finds the last occurrence of the `needle_len` bytes at `needle` that
/// starts at or after offset `start`, and stores its offset from the start
/// of the map in `*position`, or -1 if there is none, like Python's
/// `rfind(sub, start)`. As for `conc_mmap_find`, an empty needle matches at
/// `start` (Python's `rfind` would give the end), and a `start` past the
/// end gives -1. `needle` may be NULL when `needle_len` is 0.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` or `position` is NULL, or
/// `needle` is NULL with `needle_len > 0`.
///
/// # Safety
/// `map` must be NULL or an open map; `needle` NULL or readable for
/// `needle_len` bytes; `position` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_rfind(
    map: *const conc_mmap,
    needle: *const c_void,
    needle_len: usize,
    start: u64,
    position: *mut i64,
) -> conc_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        search(
            "conc_mmap_rfind",
            map,
            needle,
            needle_len,
            start,
            position,
            true,
        )
    }
}

/// How `conc_mmap_count_lines` shares out a map: it uses
/// `len / CONC_MMAP_COUNT_CHUNK` threads (the calling one included), at
/// least 1 and at most the number of cores, thread `i` of `n` counting the
/// bytes `len * i / n` to `len * (i + 1) / n`. So maps shorter than twice
/// this size are counted by the calling thread alone. Given for tests and
/// tuning; the result never depends on it.
pub const CONC_MMAP_COUNT_CHUNK: usize = 4 << 20;

/// The number of threads that count `len` bytes, `chunk` bytes or more
/// each, on `cores` cores: see `CONC_MMAP_COUNT_CHUNK`.
///
/// Measured on the 2-core development machine, a fresh map of a cached
/// file (map, count, unmap): one thread 0.93 ms and two 0.72-1.03 ms at
/// 8 MiB, 1.37 against 0.92 ms at 12 MiB, 1.9 against 1.2 ms at 16 MiB;
/// below 6 MiB two threads lose (thread start-up is ~50 us).
pub fn count_threads(len: usize, chunk: usize, cores: usize) -> usize {
    (len / chunk.max(1)).clamp(1, cores.max(1))
}

/// The number of `'\n'` bytes in `data`.
///
/// bytecount's AVX2 kernel (chosen at run time) counts 11.7 GB/s on one
/// core of the development machine against 8.1 GB/s for memchr's counting
/// iterator, and 22.9 against 15.8 GB/s with two threads (880 MB file in
/// the page cache, map already faulted in).
fn count_newlines(data: &[u8]) -> usize {
    bytecount::count(data, b'\n')
}

/// Where thread `i` of `n` starts counting `len` bytes: `len * i / n`,
/// computed without overflow (`len * i` alone overflows a `usize` for
/// maps over `usize::MAX / n` bytes, e.g. 2 GiB on 32-bit systems).
fn split_point(len: usize, i: usize, n: usize) -> usize {
    // i <= n, so the result is at most len and fits back in a usize.
    (len as u128 * i as u128 / n.max(1) as u128) as usize
}

/// What a readline loop over `data` returns: the newlines, plus one when
/// `data` does not end with one. Split between `threads` threads.
pub fn count_lines_split(data: &[u8], threads: usize) -> u64 {
    let newlines = if threads <= 1 {
        count_newlines(data)
    } else {
        let len = data.len();
        let piece =
            |i: usize| &data[split_point(len, i, threads)..split_point(len, i + 1, threads)];
        // One piece per call on the default pool (the calling thread takes
        // part), instead of a thread spawned per piece per call.
        let total = std::sync::atomic::AtomicUsize::new(0);
        crate::pool::for_ranges(threads, 1, &|b, e| {
            let n: usize = (b..e).map(|i| count_newlines(piece(i))).sum();
            total.fetch_add(n, Ordering::Relaxed);
        });
        total.into_inner()
    };
    let unterminated = data.last().is_some_and(|&b| b != b'\n');
    newlines as u64 + u64::from(unterminated)
}

/// The number of cores `count_lines` may use, found once (see [`cores`]).
static CORES: OnceLock<usize> = OnceLock::new();

/// The number of cores `count_lines` may use.
fn cores() -> usize {
    // Asking the OS reads the cgroup's CPU quota: a few microseconds, so once.
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Completes every lazy initialisation of this module now, for
/// `conc_process_spawn` to call before it forks (see
/// `thread::init_lazy_statics`).
pub(crate) fn init_lazy_statics() {
    cores();
}

/// Whether every lazy initialisation of this module is complete.
#[cfg(test)]
pub(crate) fn lazy_statics_ready() -> bool {
    CORES.get().is_some()
}

/// Counts the lines of the map and stores the count in `*lines`: the
/// number of `'\n'` bytes, plus one when the map is not empty and does not
/// end with `'\n'`. That is exactly how many lines a `conc_mmap_readline`
/// loop returns, without moving the cursor. It is the fast path: vector
/// instructions, and on maps of at least twice `CONC_MMAP_COUNT_CHUNK`
/// bytes one thread per chunk, up to the number of cores.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` or `lines` is NULL.
///
/// # Safety
/// `map` must be NULL or an open map; `lines` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_count_lines(
    map: *const conc_mmap,
    lines: *mut u64,
) -> conc_status {
    const OP: &str = "conc_mmap_count_lines";
    ffi::guard(OP, || {
        let m = crate::handle::get(map, OP, "map")?;
        // SAFETY: `lines` is NULL or writable, per the caller's contract.
        let lines = unsafe { ffi::out_ref(lines, OP, "lines") }?;
        // No madvise: on the 880 MB benchmark file (median of 25 interleaved
        // processes) MADV_SEQUENTIAL gave 67.8 ms, MADV_WILLNEED 64.4 ms,
        // MADV_HUGEPAGE 75.4 ms and MADV_POPULATE_READ 87.3 ms against
        // 63.3 ms without: the page cache's large folios already make the
        // faults few (~950 for the whole file).
        let threads = count_threads(m.len, CONC_MMAP_COUNT_CHUNK, cores());
        *lines = count_lines_split(m.bytes(), threads);
        Ok(())
    })
}

/// Writes the map's changes to the file and waits until they are stored
/// (`msync(MS_SYNC)`). Changes of a `CONC_ACCESS_WRITE` map reach the file
/// at `conc_mmap_close` anyway (readers of the file see them even before);
/// `flush` is for durability. On a `CONC_ACCESS_READ` or `CONC_ACCESS_COPY`
/// map, an anonymous map or an empty map it does nothing and returns
/// `CONC_OK`.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` is NULL; `CONC_ERR_IO` (or
/// the status of the OS error) if the OS cannot write the pages.
///
/// # Safety
/// `map` must be NULL or an open map.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_flush(map: *mut conc_mmap) -> conc_status {
    const OP: &str = "conc_mmap_flush";
    ffi::guard(OP, || {
        let m = crate::handle::get(map.cast_const(), OP, "map")?;
        if m.access != CONC_ACCESS_WRITE || m.anonymous || m.base.is_null() {
            return Ok(());
        }
        // SAFETY: `base`/`map_len` describe this handle's live mapping.
        if unsafe { libc::msync(m.base, m.map_len, libc::MS_SYNC) } != 0 {
            return Err(Error::last_os(m.ctx(OP)));
        }
        Ok(())
    })
}

/// Unmaps the map and frees the handle; pointers into it become invalid.
/// The changes of a `CONC_ACCESS_WRITE` map are in the file afterwards.
/// Closing NULL does nothing and returns `CONC_OK`.
///
/// Errors: `CONC_ERR_INVALID_STATE` if `map` was closed already or is not a
/// map made by conc (it is then left alone); `CONC_ERR_IO` (or the status
/// of the OS error) if unmapping fails: the handle is freed all the same.
/// The check is a safety net, not a licence: once a handle is closed, conc
/// may hand out its address again for a new map, which a second close of
/// the stale pointer would then close.
///
/// # Safety
/// `map` must be NULL or a pointer returned by a conc open function; no
/// other thread may be using the map.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_close(map: *mut conc_mmap) -> conc_status {
    const OP: &str = "conc_mmap_close";
    ffi::guard(OP, || {
        if map.is_null() {
            return Ok(());
        }
        let mut m = crate::handle::release(map, OP, "map")?;
        let ctx = m.ctx(OP);
        m.unmap()
            .map_err(|errno| Error::os(&ctx, errno).with_status(CONC_ERR_IO))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{
        last_error_message, CONC_ERR_INVALID_ARGUMENT, CONC_ERR_INVALID_STATE, CONC_ERR_NOT_FOUND,
        CONC_ERR_PERMISSION_DENIED, CONC_OK,
    };
    use std::ffi::CString;
    use std::sync::atomic::AtomicU32;

    /// A file in the temporary directory, removed on drop.
    struct TempFile(CString);

    impl TempFile {
        fn new(content: &[u8]) -> TempFile {
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "conc-mmap-unit-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, content).unwrap();
            TempFile(CString::new(path.into_os_string().into_vec()).unwrap())
        }
        fn path(&self) -> &std::path::Path {
            std::path::Path::new(std::ffi::OsStr::from_bytes(self.0.to_bytes()))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.path());
        }
    }

    use std::os::unix::ffi::OsStringExt;

    fn open(path: &CStr, access: u32) -> (conc_status, *mut conc_mmap) {
        let mut map = ptr::null_mut();
        // SAFETY: valid out pointer and C string.
        let s = unsafe { conc_mmap_open(&mut map, path.as_ptr(), RawAccess(access)) };
        (s, map)
    }

    fn open_range(path: &CStr, offset: u64, length: usize) -> (conc_status, *mut conc_mmap) {
        let mut map = ptr::null_mut();
        // SAFETY: valid out pointer and C string.
        let s =
            unsafe { conc_mmap_open_range(&mut map, path.as_ptr(), RawAccess(0), offset, length) };
        (s, map)
    }

    fn contents(map: *mut conc_mmap) -> Vec<u8> {
        // SAFETY: map is open; data is valid for len bytes.
        unsafe { std::slice::from_raw_parts(conc_mmap_data(map), conc_mmap_len(map)).to_vec() }
    }

    fn lines(map: *mut conc_mmap) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let (mut line, mut len) = (ptr::null(), usize::MAX);
            // SAFETY: map is open, out-params valid.
            assert_eq!(
                unsafe { conc_mmap_readline(map, &mut line, &mut len) },
                CONC_OK
            );
            if len == 0 {
                return out;
            }
            // SAFETY: readline returned `len` bytes at `line`.
            out.push(unsafe { std::slice::from_raw_parts(line, len) }.to_vec());
        }
    }

    fn close(map: *mut conc_mmap) {
        // SAFETY: map came from an open function.
        assert_eq!(unsafe { conc_mmap_close(map) }, CONC_OK);
    }

    /// What a readline loop counts, the slow way.
    fn naive_lines(data: &[u8]) -> u64 {
        data.split_inclusive(|&b| b == b'\n').count() as u64
    }

    #[test]
    fn split_points_do_not_overflow() {
        assert_eq!(split_point(10, 0, 3), 0);
        assert_eq!(split_point(10, 1, 3), 3);
        assert_eq!(split_point(10, 3, 3), 10);
        let len = usize::MAX - 1;
        assert_eq!(split_point(len, 1, 2), len / 2);
        assert_eq!(split_point(len, 2, 2), len);
        for n in 1..=64 {
            let mut last = 0;
            for i in 0..=n {
                let at = split_point(len, i, n);
                assert!(at >= last && at <= len);
                last = at;
            }
            assert_eq!(last, len);
        }
    }

    #[test]
    fn count_threads_follows_the_chunk() {
        assert_eq!(count_threads(0, 100, 8), 1);
        assert_eq!(count_threads(199, 100, 8), 1);
        assert_eq!(count_threads(200, 100, 8), 2);
        assert_eq!(count_threads(299, 100, 8), 2);
        assert_eq!(count_threads(300, 100, 8), 3);
        assert_eq!(count_threads(10_000, 100, 8), 8);
        assert_eq!(count_threads(10_000, 100, 0), 1);
        assert_eq!(count_threads(10_000, 0, 4), 4);
    }

    #[test]
    fn count_lines_split_matches_readline_at_every_split() {
        // Every length up to 70, newlines at positions that hit each split
        // point of 1..=9 threads, with and without a final newline.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..70usize {
            for pattern in 0..6 {
                let data: Vec<u8> = (0..len)
                    .map(|i| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let newline = match pattern {
                            0 => false,
                            1 => true,
                            2 => i % 2 == 0,
                            3 => i + 1 == len,
                            4 => seed % 5 == 0,
                            _ => (1..=9).any(|t| i == len * (i * t / len.max(1)) / t),
                        };
                        if newline {
                            b'\n'
                        } else {
                            b'a'
                        }
                    })
                    .collect();
                let want = naive_lines(&data);
                for threads in 1..=9 {
                    assert_eq!(
                        count_lines_split(&data, threads),
                        want,
                        "len {len} pattern {pattern} threads {threads}"
                    );
                }
            }
        }
    }

    #[test]
    fn count_lines_split_around_the_real_chunk() {
        let chunk = CONC_MMAP_COUNT_CHUNK;
        let mut data = vec![b'x'; 2 * chunk + 2];
        for i in (0..data.len()).step_by(97) {
            data[i] = b'\n';
        }
        for len in [
            chunk - 1,
            chunk,
            chunk + 1,
            2 * chunk - 1,
            2 * chunk,
            2 * chunk + 1,
        ] {
            let part = &data[..len];
            let want = naive_lines(part);
            for threads in [count_threads(len, chunk, 4), 1, 2, 3] {
                assert_eq!(count_lines_split(part, threads), want, "len {len}");
            }
        }
    }

    #[test]
    fn readline_seek_tell_and_find() {
        let f = TempFile::new(b"ab\ncd\n\nlast");
        let (s, map) = open(&f.0, 0);
        assert_eq!(s, CONC_OK);
        assert_eq!(contents(map), b"ab\ncd\n\nlast");
        assert_eq!(
            lines(map),
            [&b"ab\n"[..], b"cd\n", b"\n", b"last"].map(<[u8]>::to_vec)
        );
        // SAFETY: map is open.
        unsafe {
            assert_eq!(conc_mmap_tell(map), 11);
            assert_eq!(conc_mmap_seek(map, -4, RawWhence(2)), CONC_OK);
            assert_eq!(conc_mmap_tell(map), 7);
            assert_eq!(conc_mmap_seek(map, 5, RawWhence(1)), CONC_ERR_OUT_OF_RANGE);
            assert!(last_error_message().starts_with("conc_mmap_seek(\""));
            assert_eq!(conc_mmap_tell(map), 7);
            assert_eq!(
                conc_mmap_seek(map, 0, RawWhence(3)),
                CONC_ERR_INVALID_ARGUMENT
            );
            let mut b = 0u8;
            assert_eq!(conc_mmap_read_byte(map, &mut b), CONC_OK);
            assert_eq!(b, b'l');
            let mut pos = 99i64;
            assert_eq!(
                conc_mmap_find(map, b"d\n".as_ptr().cast(), 2, 0, &mut pos),
                CONC_OK
            );
            assert_eq!(pos, 4);
            assert_eq!(
                conc_mmap_rfind(map, b"\n".as_ptr().cast(), 1, 0, &mut pos),
                CONC_OK
            );
            assert_eq!(pos, 6);
            assert_eq!(conc_mmap_find(map, ptr::null(), 0, 3, &mut pos), CONC_OK);
            assert_eq!(pos, 3);
            assert_eq!(conc_mmap_rfind(map, ptr::null(), 0, 3, &mut pos), CONC_OK);
            assert_eq!(pos, 3);
            assert_eq!(
                conc_mmap_find(map, b"a".as_ptr().cast(), 1, 12, &mut pos),
                CONC_OK
            );
            assert_eq!(pos, -1);
            let mut n = 0u64;
            assert_eq!(conc_mmap_count_lines(map, &mut n), CONC_OK);
            assert_eq!(n, 4);
        }
        close(map);
    }

    #[test]
    fn unaligned_ranges_match_the_file() {
        let content: Vec<u8> = (0..3 * 4096 + 123).map(|i| (i * 7 % 251) as u8).collect();
        let f = TempFile::new(&content);
        for offset in [0u64, 1, 4095, 4096, 4097, 8191, 12000, 12411, 12412] {
            for length in [0usize, 1, 5, 4096, 300] {
                let (s, map) = open_range(&f.0, offset, length);
                let end = if length == 0 {
                    content.len()
                } else {
                    offset as usize + length
                };
                if end > content.len() || offset as usize > content.len() {
                    assert_eq!(s, CONC_ERR_OUT_OF_RANGE, "{offset} {length}");
                    assert!(map.is_null());
                    continue;
                }
                assert_eq!(s, CONC_OK, "{offset} {length}: {}", last_error_message());
                assert_eq!(contents(map), &content[offset as usize..end]);
                close(map);
            }
        }
        assert_eq!(
            std::fs::metadata(f.path()).unwrap().len(),
            content.len() as u64
        );
    }

    #[test]
    fn errors_name_the_operation_and_path() {
        let (s, map) = open(c"/nonexistent/conc-unit", 0);
        assert_eq!(s, CONC_ERR_NOT_FOUND);
        assert!(map.is_null());
        assert_eq!(
            last_error_message(),
            "conc_mmap_open(\"/nonexistent/conc-unit\"): No such file or directory (ENOENT)"
        );
        let (s, _) = open(c"/tmp", 0);
        assert_eq!(s, CONC_ERR_INVALID_ARGUMENT);
        assert!(last_error_message().contains("directory"));
        let f = TempFile::new(b"abc");
        for bad in [3u32, 99, u32::MAX] {
            assert_eq!(open(&f.0, bad).0, CONC_ERR_INVALID_ARGUMENT);
            assert!(last_error_message().contains("conc_access"));
        }
        let (s, _) = open_range(&f.0, 4, 0);
        assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
        assert!(last_error_message().starts_with("conc_mmap_open_range(\""));
        // SAFETY: NULL handles are refused, not dereferenced.
        unsafe {
            assert_eq!(conc_mmap_close(ptr::null_mut()), CONC_OK);
            assert!(conc_mmap_data(ptr::null()).is_null());
            assert_eq!(conc_mmap_len(ptr::null()), 0);
            assert_eq!(conc_mmap_flush(ptr::null_mut()), CONC_ERR_INVALID_ARGUMENT);
        }
        let (s, map) = open(&f.0, 0);
        assert_eq!(s, CONC_OK);
        close(map);
        // SAFETY: a closed pointer is refused by the live-object set.
        assert_eq!(unsafe { conc_mmap_close(map) }, CONC_ERR_INVALID_STATE);
    }

    #[test]
    fn write_map_reaches_the_file_copy_does_not() {
        let f = TempFile::new(b"hello world\n");
        let (s, map) = open(&f.0, 2);
        assert_eq!(s, CONC_OK);
        // SAFETY: a COPY map is writable for its length.
        unsafe { *conc_mmap_data_mut(map) = b'J' };
        assert_eq!(contents(map)[0], b'J');
        // SAFETY: map is open.
        assert_eq!(unsafe { conc_mmap_flush(map) }, CONC_OK);
        close(map);
        assert_eq!(std::fs::read(f.path()).unwrap(), b"hello world\n");

        let (s, map) = open(&f.0, 0);
        assert_eq!(s, CONC_OK);
        // SAFETY: map is open.
        assert!(unsafe { conc_mmap_data_mut(map) }.is_null());
        close(map);

        let (s, map) = open(&f.0, 1);
        assert_eq!(s, CONC_OK);
        // SAFETY: a WRITE map is writable for its length.
        unsafe {
            *conc_mmap_data_mut(map) = b'J';
            assert_eq!(conc_mmap_flush(map), CONC_OK);
        }
        assert_eq!(std::fs::read(f.path()).unwrap(), b"Jello world\n");
        close(map);
    }

    #[test]
    fn empty_file_and_anonymous() {
        let f = TempFile::new(b"");
        for access in 0..3 {
            let (s, map) = open(&f.0, access);
            assert_eq!(s, CONC_OK);
            // SAFETY: map is open.
            unsafe {
                assert!(!conc_mmap_data(map).is_null());
                assert_eq!(conc_mmap_data_mut(map).is_null(), access == 0);
                assert_eq!(conc_mmap_len(map), 0);
                let mut b = 0;
                assert_eq!(conc_mmap_read_byte(map, &mut b), CONC_ERR_OUT_OF_RANGE);
                let mut n = 9;
                assert_eq!(conc_mmap_count_lines(map, &mut n), CONC_OK);
                assert_eq!(n, 0);
                assert_eq!(conc_mmap_flush(map), CONC_OK);
            }
            assert!(lines(map).is_empty());
            close(map);
        }
        let mut map = ptr::null_mut();
        // SAFETY: valid out pointer.
        unsafe {
            assert_eq!(conc_mmap_anonymous(&mut map, 0), CONC_ERR_INVALID_ARGUMENT);
            assert_eq!(conc_mmap_anonymous(&mut map, 10000), CONC_OK);
        }
        assert_eq!(contents(map), vec![0u8; 10000]);
        close(map);
    }

    #[test]
    fn permission_denied_is_reported() {
        // root may open any file for writing, so use one no one may write.
        let f = TempFile::new(b"x");
        std::fs::set_permissions(
            f.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o444),
        )
        .unwrap();
        let (s, map) = open(&f.0, 1);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Root may: the C test checks the refusal as an ordinary user.
            assert_eq!(s, CONC_OK);
            close(map);
        } else {
            assert_eq!(s, CONC_ERR_PERMISSION_DENIED);
            assert!(last_error_message().contains("EACCES"));
        }
    }
}
