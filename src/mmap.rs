//! Memory-mapped files: `conc_mmap`, the port of Python's `mmap` object.
//!
//! A map covers a range of a regular file (or anonymous shared memory).
//! `open_range` accepts any offset: the OS mapping starts at the page below
//! it and the handle keeps the distance, so `data` points at the first
//! requested byte. A range of length 0 (an empty file, or an offset at the
//! end) maps nothing: `data` is then a non-NULL dangling pointer, never
//! read. The file descriptor is closed once the map exists (the map keeps
//! the file's pages alive by itself), except for a whole-file
//! `CONC_ACCESS_WRITE` map, which keeps it for `conc_mmap_resize`.
//!
//! The cursor used by `read_byte`, `readline`, `read`, `write`, `seek` and
//! `tell` is an atomic address kept in the handle's slot (see [`Cursor`]
//! for why), so that two threads misusing one handle get interleaved
//! lines, not undefined behaviour; the contract is still one handle per
//! thread. The mapping's address and length are atomics too,
//! because `conc_mmap_resize` changes them through the shared handle:
//! every call takes one snapshot of them (plain loads on x86-64), so a
//! resize racing another call on the same map (the program's bug, which
//! the header forbids, like closing a map in use) gives that call the old
//! or the new mapping, never a torn Rust value.
//!
//! Every access conc makes to a map's pages runs under the SIGBUS guard of
//! `crate::sigbus`: a file that shrinks under the map makes the call
//! return `CONC_ERR_IO` instead of killing the process.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::error::{
    conc_status, Error, Result, CONC_ERR_INVALID_ARGUMENT, CONC_ERR_INVALID_STATE, CONC_ERR_IO,
    CONC_ERR_OUT_OF_RANGE, CONC_ERR_PERMISSION_DENIED, CONC_ERR_RESOURCE_EXHAUSTED,
    CONC_ERR_UNSUPPORTED,
};
use crate::ffi;
use crate::sigbus::Region;

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

/// A hint for `conc_mmap_advise` about how a range of the map will be
/// used, passed to `madvise`, like Python's `mmap.madvise`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum conc_advice {
    /// No special treatment (`MADV_NORMAL`).
    CONC_ADVICE_NORMAL = 0,
    /// Pages will be used in random order: read ahead less
    /// (`MADV_RANDOM`).
    CONC_ADVICE_RANDOM = 1,
    /// Pages will be used in order: read ahead more, and drop pages soon
    /// after they are read (`MADV_SEQUENTIAL`).
    CONC_ADVICE_SEQUENTIAL = 2,
    /// The range will be needed soon: start reading it in
    /// (`MADV_WILLNEED`).
    CONC_ADVICE_WILLNEED = 3,
    /// The range is not needed for now: free its pages (`MADV_DONTNEED`).
    /// A file map reads them from the file again when touched, so the
    /// private changes of a `CONC_ACCESS_COPY` map in those pages are
    /// lost. See `conc_mmap_advise`.
    CONC_ADVICE_DONTNEED = 4,
}

pub use conc_advice::*;

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

/// A `conc_advice` as it arrives from C: any integer, checked before use.
/// Spelled `conc_advice` in the header.
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct RawAdvice(pub u32);

impl RawAccess {
    fn get(self, op: &dyn fmt::Display) -> Result<conc_access> {
        match self.0 {
            0 => Ok(CONC_ACCESS_READ),
            1 => Ok(CONC_ACCESS_WRITE),
            2 => Ok(CONC_ACCESS_COPY),
            v => Err(Error::invalid(format_args!(
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
            v => Err(Error::invalid(format_args!(
                "{op}: unknown conc_whence value {} (expected CONC_SEEK_SET, \
                 CONC_SEEK_CUR or CONC_SEEK_END)",
                v as i32
            ))),
        }
    }
}

impl RawAdvice {
    fn get(self, op: &dyn fmt::Display) -> Result<conc_advice> {
        match self.0 {
            0 => Ok(CONC_ADVICE_NORMAL),
            1 => Ok(CONC_ADVICE_RANDOM),
            2 => Ok(CONC_ADVICE_SEQUENTIAL),
            3 => Ok(CONC_ADVICE_WILLNEED),
            4 => Ok(CONC_ADVICE_DONTNEED),
            v => Err(Error::invalid(format_args!(
                "{op}: unknown conc_advice value {} (expected CONC_ADVICE_NORMAL, \
                 CONC_ADVICE_RANDOM, CONC_ADVICE_SEQUENTIAL, CONC_ADVICE_WILLNEED or \
                 CONC_ADVICE_DONTNEED)",
                v as i32
            ))),
        }
    }
}

/// A memory-mapped file, or anonymous shared memory: an opaque handle made
/// by `conc_mmap_open`, `conc_mmap_open_range`, `conc_mmap_create` or
/// `conc_mmap_anonymous` and released by `conc_mmap_close`.
///
/// The bytes are at `conc_mmap_data(map)` for `conc_mmap_len(map)` bytes,
/// valid until the close or a `conc_mmap_resize`. The handle also has a
/// cursor, used by `conc_mmap_read_byte`, `conc_mmap_readline`,
/// `conc_mmap_read`, `conc_mmap_write`, `conc_mmap_write_byte`,
/// `conc_mmap_seek` and `conc_mmap_tell` like a file position.
///
/// Threads: every function may be called from any thread, and several
/// threads may read the bytes of one map at once. The cursor belongs to the
/// handle, so use one handle per thread for the cursor functions (open the
/// file once per thread): two threads sharing a cursor get interleaved
/// lines. `conc_mmap_resize` must not run while another thread uses the
/// same map (it moves the bytes), and a map must not be closed while
/// another thread still uses it.
///
/// A file that shrinks under the map (another process truncates it):
/// touching a page past the new end raises SIGBUS, a property of mmap
/// itself. conc's own accessors (`conc_mmap_read_byte`, `readline`,
/// `read`, `find`, `rfind`, `count_lines`, `write`, `write_byte`, `move`)
/// catch it: they return `CONC_ERR_IO` with a message saying the file
/// shrank under the map, instead of killing the process. To do so conc
/// installs a SIGBUS handler on the first map, which hands every other
/// SIGBUS to the handler the program had installed before (or to the
/// default action: the process dies of SIGBUS as without conc). After such
/// a report the map is damaged: the lost pages are replaced by zeros, also
/// as seen through `conc_mmap_data`; a `CONC_ACCESS_WRITE` map no longer
/// reaches the file there; every later accessor call on it returns
/// `CONC_ERR_IO`. Close it. The program's own loads through
/// `conc_mmap_data` before that still raise SIGBUS, as mmap does; a
/// program that installs its own SIGBUS handler after its first map
/// replaces conc's and must chain to it (call the handler it replaced) to
/// keep this protection.
///
/// Also a property of mmap: a `CONC_ACCESS_WRITE` map of a sparse file
/// (holes) on a full file system gets SIGBUS at the first write to a page
/// that cannot be stored; conc's `conc_mmap_write` reports it as above,
/// and `conc_mmap_create` and `conc_mmap_resize` reserve the file's space
/// so that their maps never meet it.
#[allow(non_camel_case_types)]
pub struct conc_mmap {
    /// The start of the OS mapping (page aligned), NULL when nothing is
    /// mapped (length 0).
    base: AtomicPtr<c_void>,
    /// The length of the OS mapping: `delta + len`.
    map_len: AtomicUsize,
    /// The first byte of the map: `base + delta`, or dangling when `len == 0`.
    data: AtomicPtr<u8>,
    /// The number of bytes of the map.
    len: AtomicUsize,
    /// The OS mapping as the SIGBUS handler sees it, and whether a lost
    /// page was replaced by zeros (the map is damaged).
    region: Region,
    access: conc_access,
    /// What error messages name: `"path"` or `anonymous, N bytes`.
    label: crate::error::Message,
    /// True for anonymous maps, which have no file to flush to.
    anonymous: bool,
    /// The file, kept open for whole-file `CONC_ACCESS_WRITE` maps only:
    /// the maps `conc_mmap_resize` may grow or shrink.
    file: Option<File>,
}

impl crate::handle::Object for conc_mmap {
    const KIND: crate::handle::Kind = crate::handle::Kind::Mmap;
}

/// A map's cursor: the address of the byte it is at, always within
/// `data..=data + len`, kept in the handle's hot word
/// ([`crate::handle::lookup_aux`]) rather than in the map. So the readline
/// loop finds its line start with one load from the handle's slot: no load
/// of the map's address first, and no add of an offset (together ~0.2 of a
/// bare `memchr` loop's time, measured). The offset functions (`seek`,
/// `tell`, `read`, ...) subtract `data`.
#[derive(Clone, Copy)]
struct Cursor<'a>(&'a AtomicPtr<u8>);

impl Cursor<'_> {
    /// The cursor's offset in the snapshot `(data, len)`, clamped to `len`.
    #[inline(always)]
    fn offset(self, data: *mut u8, len: usize) -> usize {
        (self.0.load(Ordering::Relaxed) as usize)
            .wrapping_sub(data as usize)
            .min(len)
    }

    /// Moves the cursor to offset `pos` (at most `len`) of the snapshot
    /// whose first byte is `data`.
    #[inline(always)]
    fn set(self, data: *mut u8, pos: usize) {
        self.0.store(data.wrapping_add(pos), Ordering::Relaxed);
    }
}

/// The live map behind `map` and its cursor: [`crate::handle::get_aux`].
#[inline(always)]
fn get_map<'a>(map: *const conc_mmap, op: &str) -> Result<(&'a conc_mmap, Cursor<'a>)> {
    let (m, aux) = crate::handle::get_aux(map, op, "map")?;
    Ok((m, Cursor(aux)))
}

/// Publishes a new map, its cursor at its first byte.
fn publish_map(map: conc_mmap) -> Result<*mut conc_mmap> {
    let data = map.view().0;
    crate::handle::publish_with_aux(map, data)
}

// SAFETY: the handle owns its mapping; the pointers are addresses of memory
// that stays mapped until the handle is dropped or resized (which the
// contract forbids during other calls on the map), and all mutable state is
// atomic.
unsafe impl Send for conc_mmap {}
// SAFETY: as above.
unsafe impl Sync for conc_mmap {}

fn prot_of(access: conc_access) -> c_int {
    match access {
        CONC_ACCESS_READ => libc::PROT_READ,
        CONC_ACCESS_WRITE | CONC_ACCESS_COPY => libc::PROT_READ | libc::PROT_WRITE,
    }
}

impl conc_mmap {
    /// A map of `map_len` bytes at `base` (NULL: nothing mapped), whose
    /// bytes start `delta` bytes in.
    fn new(
        base: *mut c_void,
        map_len: usize,
        delta: usize,
        access: conc_access,
        label: crate::error::Message,
    ) -> conc_mmap {
        let m = conc_mmap {
            base: AtomicPtr::new(ptr::null_mut()),
            map_len: AtomicUsize::new(0),
            data: AtomicPtr::new(NonNull::dangling().as_ptr()),
            len: AtomicUsize::new(0),
            region: Region::new(prot_of(access)),
            access,
            label,
            anonymous: false,
            file: None,
        };
        m.set_mapping(base, map_len, delta);
        crate::sigbus::install();
        m
    }

    /// Records a new OS mapping (resize, creation).
    fn set_mapping(&self, base: *mut c_void, map_len: usize, delta: usize) {
        let (data, len) = if base.is_null() || map_len == delta {
            (NonNull::dangling().as_ptr(), 0)
        } else {
            // SAFETY: delta < map_len: inside the mapping.
            (unsafe { base.cast::<u8>().add(delta) }, map_len - delta)
        };
        let (base, map_len) = if len == 0 && base.is_null() {
            (ptr::null_mut(), 0)
        } else {
            (base, map_len)
        };
        self.base.store(base, Ordering::Relaxed);
        self.map_len.store(map_len, Ordering::Relaxed);
        self.data.store(data, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
        self.region.set(base, map_len);
    }

    /// The first byte and the length: one snapshot per call.
    #[inline(always)]
    fn view(&self) -> (*mut u8, usize) {
        (
            self.data.load(Ordering::Relaxed),
            self.len.load(Ordering::Relaxed),
        )
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// The bytes of the map.
    fn bytes(&self) -> &[u8] {
        let (data, len) = self.view();
        // SAFETY: `data` is valid for reads of `len` bytes while the mapping
        // lives (or dangling and aligned with `len == 0`). Other processes or
        // threads writing the shared pages at the same time is the usual mmap
        // caveat: the bytes are plain data, any value is valid.
        unsafe { std::slice::from_raw_parts(data, len) }
    }

    /// `op("path")`, for error messages.
    fn ctx(&self, op: &str) -> crate::error::Message {
        crate::msg!("{op}({})", self.label)
    }

    fn writable(&self) -> bool {
        self.access != CONC_ACCESS_READ
    }

    /// Runs `f`, an access to the map's pages, under the SIGBUS guard:
    /// `CONC_ERR_IO` if the file shrank under the map (now or before).
    #[inline(always)]
    fn guarded<R>(&self, op: &str, f: impl FnOnce() -> R) -> Result<R> {
        let r = self.region.access(f);
        if self.region.hit() {
            return Err(self.damaged(op));
        }
        Ok(r)
    }

    /// Records [`Self::damaged`] as the last error and returns its status,
    /// for fast paths that return statuses directly.
    #[cold]
    #[inline(never)]
    fn damaged_status(&self, op: &str) -> conc_status {
        let err = self.damaged(op);
        crate::error::set_last_error(&err);
        err.status
    }

    #[cold]
    #[inline(never)]
    fn damaged(&self, op: &str) -> Error {
        Error::new(
            CONC_ERR_IO,
            format_args!(
                "{}: the file shrank under the map (another process truncated it, or a page \
                 of it could not be read or stored): its lost pages now read as zeros and no \
                 longer reach the file; the map is damaged, close it",
                self.ctx(op)
            ),
        )
    }

    /// `CONC_ERR_PERMISSION_DENIED` for a read-only map.
    fn require_writable(&self, op: &str) -> Result<()> {
        if self.writable() {
            Ok(())
        } else {
            Err(Error::new(
                CONC_ERR_PERMISSION_DENIED,
                format_args!("{}: the map is read-only (CONC_ACCESS_READ)", self.ctx(op)),
            ))
        }
    }

    /// Unmaps the pages; the handle is then an empty map.
    fn unmap(&self) -> std::result::Result<(), i32> {
        let base = self.base.load(Ordering::Relaxed);
        if base.is_null() {
            return Ok(());
        }
        // SAFETY: `base`/`map_len` describe a mapping this handle made and
        // still owns; nothing reads it after this point.
        let rc = unsafe { libc::munmap(base, self.map_len.load(Ordering::Relaxed)) };
        self.set_mapping(ptr::null_mut(), 0, 0);
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

fn not_regular(ctx: &str) -> Error {
    Error::invalid(format_args!(
        "{ctx}: not a regular file (only regular files can be mapped)"
    ))
}

fn open_error(ctx: &str, e: std::io::Error) -> Error {
    match e.raw_os_error().unwrap_or(libc::EIO) {
        // A unix socket cannot be opened at all.
        libc::ENXIO => Error {
            status: CONC_ERR_INVALID_ARGUMENT,
            message: crate::msg!("{ctx}: not a regular file (only regular files can be mapped)"),
            os_error: libc::ENXIO,
        },
        errno => Error::os(ctx, errno),
    }
}

/// Opens `path` for mapping as `open(2)` would, refusing anything but a
/// regular file without ever blocking on it.
///
/// The name is first opened with `O_PATH`, which opens nothing (no FIFO
/// wait, no device side effect, no lease break) and tells what the name is.
/// A regular file is then reopened through `/proc/self/fd` with the wanted
/// mode and no `O_NONBLOCK`: the same inode, so the check cannot be raced,
/// and an `open(2)` in every other respect: it waits for the holder of a
/// lease on the file, as any `open` does. Without `/proc`, the fallback
/// opens with `O_NONBLOCK` (a FIFO must not block the call) and, when a
/// lease makes that fail with `EWOULDBLOCK` (the kernel has then started
/// breaking the lease), retries every 10 ms until the holder lets go or the
/// kernel breaks the lease (`/proc/sys/fs/lease-break-time`).
fn open_regular(ctx: &str, path: &CStr, write: bool) -> Result<File> {
    let name = std::ffi::OsStr::from_bytes(path.to_bytes());
    let probe = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOCTTY)
        .open(name)
        .map_err(|e| open_error(ctx, e))?;
    let meta = probe
        .metadata()
        .map_err(|e| Error::os(ctx, e.raw_os_error().unwrap_or(libc::EIO)))?;
    if meta.is_dir() {
        return Err(Error::invalid(format_args!("{ctx}: is a directory")));
    }
    if !meta.is_file() {
        return Err(not_regular(ctx));
    }
    let mut options = OpenOptions::new();
    options.read(true).write(write);
    // A Message, not a String: no heap (std opens short paths from the stack).
    let proc_path = crate::msg!("/proc/self/fd/{}", probe.as_raw_fd());
    match options
        .custom_flags(libc::O_NOCTTY)
        .open(std::path::Path::new(proc_path.as_str()))
    {
        Ok(file) => return Ok(file),
        // No /proc: the fallback below.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(open_error(ctx, e)),
    }
    loop {
        match options
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(name)
        {
            Ok(file) => {
                let meta = file
                    .metadata()
                    .map_err(|e| Error::os(ctx, e.raw_os_error().unwrap_or(libc::EIO)))?;
                if !meta.is_file() {
                    return Err(not_regular(ctx));
                }
                // Reads and writes of the descriptor are not ours to make
                // non-blocking; the map never uses them anyway.
                // SAFETY: fcntl on a descriptor we own.
                unsafe {
                    let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
                    if flags >= 0 {
                        libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
                    }
                }
                return Ok(file);
            }
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(open_error(ctx, e)),
        }
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
    let label = crate::msg!("\"{}\"", path.to_string_lossy());
    let file = open_regular(ctx, path, access == CONC_ACCESS_WRITE)?;
    let meta = file
        .metadata()
        .map_err(|e| Error::os(ctx, e.raw_os_error().unwrap_or(libc::EIO)))?;
    let size = meta.len();
    if offset > size {
        return Err(Error::new(
            CONC_ERR_OUT_OF_RANGE,
            format_args!("{ctx}: offset {offset} is past the end of the file ({size} bytes)"),
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
                    format_args!(
                        "{ctx}: offset {offset} + length {length} reaches past the end of the \
                         file ({size} bytes)"
                    ),
                ))
            }
        }
    };
    // A whole-file WRITE map keeps its descriptor: resize changes the
    // file's size through it.
    let whole_write = access == CONC_ACCESS_WRITE && offset == 0 && length == 0;
    let keep = |mut m: conc_mmap, file: File| {
        if whole_write {
            m.file = Some(file);
        }
        m
    };
    if len64 == 0 {
        return Ok(keep(
            conc_mmap::new(ptr::null_mut(), 0, 0, access, label),
            file,
        ));
    }
    let page = page_size();
    let aligned = offset - offset % page;
    let delta = (offset - aligned) as usize;
    let too_large = || {
        Error::new(
            CONC_ERR_RESOURCE_EXHAUSTED,
            format_args!("{ctx}: {len64} bytes do not fit in this address space"),
        )
    };
    let len = usize::try_from(len64).map_err(|_| too_large())?;
    let map_len = len.checked_add(delta).ok_or_else(too_large)?;
    let file_offset = libc::off_t::try_from(aligned).map_err(|_| too_large())?;
    let flags = match access {
        CONC_ACCESS_COPY => libc::MAP_PRIVATE,
        _ => libc::MAP_SHARED,
    };
    // SAFETY: a fresh mapping chosen by the kernel (addr NULL) of a file
    // descriptor we own; map_len > 0.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            map_len,
            prot_of(access),
            flags,
            file.as_raw_fd(),
            file_offset,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(mmap_error(ctx, crate::error::errno()));
    }
    // The mapping keeps the file's pages; the descriptor closes with `file`
    // unless kept.
    Ok(keep(
        conc_mmap::new(base, map_len, delta, access, label),
        file,
    ))
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
            None => crate::msg!("{op}(\"{}\")", path.to_string_lossy()),
            Some((offset, length)) => crate::msg!(
                "{op}(\"{}\", offset {offset}, length {length})",
                path.to_string_lossy()
            ),
        };
        let access = access.get(&ctx)?;
        let (offset, length) = range.unwrap_or((0, 0));
        let map = open_file(&ctx, path, access, offset, length)?;
        *out = publish_map(map)?;
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
/// never changed, except by `conc_mmap_resize`.
///
/// The file is opened as `open(2)` opens it: if another process holds a
/// lease on it (`F_SETLEASE`) that this open breaks, the call waits until
/// the holder releases it, or until the kernel breaks it
/// (`/proc/sys/fs/lease-break-time`, 45 s by default). A FIFO, socket or
/// device is refused at once, never opened, so the call never blocks on
/// one.
///
/// Hazard: if another process truncates the file while it is mapped,
/// touching the lost pages raises SIGBUS; conc's own accessors report it
/// as `CONC_ERR_IO` instead (see `conc_mmap`).
///
/// Hazard: a WRITE map of a sparse file (one with holes, e.g. grown with
/// `ftruncate`) on a full file system gets SIGBUS at the first write to a
/// page that the file system cannot allocate; reserve the space first
/// (`posix_fallocate`) when that matters.
///
/// Files under `/proc` (and similar pseudo-files) report size 0, so they
/// map as an empty map of length 0 with `CONC_OK`: read them with
/// `read(2)` instead.
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
/// `conc_mmap_open`. The file's size is never changed. A map from offset 0
/// with length 0 is a whole-file map, as `conc_mmap_open` makes.
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

/// Reserves `[0, size)` of the file (extending it): `posix_fallocate`
/// returns its error instead of setting errno.
fn reserve(file: &File, size: usize, ctx: &str) -> Result<()> {
    let len = libc::off_t::try_from(size).map_err(|_| {
        Error::new(
            CONC_ERR_RESOURCE_EXHAUSTED,
            format_args!("{ctx}: {size} bytes is too large for a file"),
        )
    })?;
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate on a descriptor we own.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        errno => Err(Error::os(
            format_args!("{ctx}: cannot reserve {size} bytes"),
            errno,
        )),
    }
}

/// Creates the file `path`, which must not exist, of `size` zero bytes with
/// its space reserved, maps it `CONC_ACCESS_WRITE` and stores the new
/// handle in `*out` (NULL on failure), like `open(path, O_RDWR | O_CREAT |
/// O_EXCL, 0666)` (less the umask), `posix_fallocate` and `conc_mmap_open`.
///
/// The space is reserved (`posix_fallocate`), so a full disk fails here
/// with `CONC_ERR_RESOURCE_EXHAUSTED`, not with SIGBUS at a later write.
/// Size 0 is allowed: an empty map, which `conc_mmap_resize` can grow.
/// The map is a whole-file `CONC_ACCESS_WRITE` map. When the call fails it
/// leaves no file behind.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `out` or `path` is NULL;
/// `CONC_ERR_ALREADY_EXISTS` if `path` exists (any kind of file, a
/// dangling symbolic link included); `CONC_ERR_NOT_FOUND` if its directory
/// does not exist; `CONC_ERR_PERMISSION_DENIED` if the OS refuses to create
/// it; `CONC_ERR_RESOURCE_EXHAUSTED` if the disk is full (or over quota),
/// `size` is too large for a file, or memory or descriptors run out;
/// `CONC_ERR_UNSUPPORTED` if its file system cannot map files;
/// `CONC_ERR_IO` for other OS failures.
///
/// # Safety
/// `out` must be NULL or valid for writing a pointer; `path` must be NULL
/// or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_create(
    out: *mut *mut conc_mmap,
    path: *const c_char,
    size: usize,
) -> conc_status {
    const OP: &str = "conc_mmap_create";
    ffi::guard(OP, || {
        // SAFETY: `out` is NULL or writable, per the caller's contract.
        let out = unsafe { ffi::out_ref(out, OP, "out") }?;
        *out = ptr::null_mut();
        // SAFETY: `path` is NULL or a C string, per the caller's contract.
        let path = unsafe { ffi::c_str(path, OP, "path") }?;
        let ctx = crate::msg!("{OP}(\"{}\", {size})", path.to_string_lossy());
        let name = std::ffi::OsStr::from_bytes(path.to_bytes());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o666)
            .custom_flags(libc::O_NOCTTY)
            .open(name)
            .map_err(|e| Error::os(ctx, e.raw_os_error().unwrap_or(libc::EIO)))?;
        let made = (|| {
            reserve(&file, size, &ctx)?;
            let base = if size == 0 {
                ptr::null_mut()
            } else {
                // SAFETY: a fresh shared mapping of our descriptor; size > 0.
                let base = unsafe {
                    libc::mmap(
                        ptr::null_mut(),
                        size,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        file.as_raw_fd(),
                        0,
                    )
                };
                if base == libc::MAP_FAILED {
                    return Err(mmap_error(&ctx, crate::error::errno()));
                }
                base
            };
            let label = crate::msg!("\"{}\"", path.to_string_lossy());
            let mut map = conc_mmap::new(base, size, 0, CONC_ACCESS_WRITE, label);
            // SAFETY: dup of a descriptor we own; the copy is owned by the map.
            let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
            if fd < 0 {
                return Err(Error::last_os(ctx));
            }
            // SAFETY: a fresh descriptor nobody else owns.
            map.file = Some(unsafe { File::from_raw_fd(fd) });
            publish_map(map)
        })();
        match made {
            Ok(handle) => {
                *out = handle;
                Ok(())
            }
            Err(err) => {
                // Nothing left behind: the file is ours (O_EXCL).
                // SAFETY: a NUL-terminated path.
                unsafe { libc::unlink(path.as_ptr()) };
                Err(err)
            }
        }
    })
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
        let ctx = crate::msg!("{OP}({length})");
        if length == 0 {
            return Err(Error::invalid(format_args!("{ctx}: length is 0")));
        }
        let base = map_anonymous(length).map_err(|errno| mmap_error(&ctx, errno))?;
        let mut map = conc_mmap::new(
            base,
            length,
            0,
            CONC_ACCESS_WRITE,
            crate::msg!("anonymous, {length} bytes"),
        );
        map.anonymous = true;
        *out = publish_map(map)?;
        Ok(())
    })
}

/// A fresh shared anonymous mapping of `length > 0` bytes, or the errno.
fn map_anonymous(length: usize) -> std::result::Result<*mut c_void, i32> {
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
        Err(crate::error::errno())
    } else {
        Ok(base)
    }
}

/// Returns the first byte of the map, valid for `conc_mmap_len(map)` bytes
/// until `conc_mmap_close` or `conc_mmap_resize`. Never NULL for an open
/// map, even of length 0 (then it must not be read). NULL if `map` is NULL.
///
/// # Safety
/// `map` must be NULL or an open map.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_data(map: *const conc_mmap) -> *const u8 {
    ffi::guard_value("conc_mmap_data", ptr::null(), || {
        crate::handle::lookup(map).map_or(ptr::null(), |m| m.view().0.cast_const())
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
            Some(m) if m.writable() => m.view().0,
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
        crate::handle::lookup(map).map_or(0, |m| m.len())
    })
}

#[cold]
#[inline(never)]
fn at_end(m: &conc_mmap, op: &str, pos: usize) -> Error {
    Error::new(
        CONC_ERR_OUT_OF_RANGE,
        format_args!("{}: the cursor is at the end ({pos} bytes)", m.ctx(op)),
    )
}

/// Stores the byte at the cursor in `*byte` and moves the cursor past it,
/// like Python's `read_byte()`.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` or `byte` is NULL;
/// `CONC_ERR_OUT_OF_RANGE` if the cursor is at the end (`*byte` unchanged);
/// `CONC_ERR_IO` if the file shrank under the map (see `conc_mmap`).
///
/// # Safety
/// `map` must be NULL or an open map; `byte` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_read_byte(map: *mut conc_mmap, byte: *mut u8) -> conc_status {
    const OP: &str = "conc_mmap_read_byte";
    ffi::guard(OP, || {
        let (m, cursor) = get_map(map.cast_const(), OP)?;
        // SAFETY: `byte` is NULL or writable, per the caller's contract.
        let byte = unsafe { ffi::out_ref(byte, OP, "byte") }?;
        let (data, len) = m.view();
        let pos = cursor.offset(data, len);
        if pos == len {
            return Err(at_end(m, OP, pos));
        }
        // SAFETY: pos < len: inside the map.
        let b = m.guarded(OP, || unsafe { data.add(pos).read_volatile() })?;
        *byte = b;
        cursor.set(data, pos + 1);
        Ok(())
    })
}

/// The length of the line at the start of `rest` (through its `'\n'`, or
/// all of it): glibc's `memchr`, the same one a C loop calls, whose
/// start-up on short lines is cheaper than the memchr crate's dispatch.
#[inline(always)]
fn line_len(rest: *const u8, n: usize) -> usize {
    // SAFETY: `rest` is valid for reads of `n` bytes (the caller's
    // snapshot of the map); memchr reads no further.
    let nl = unsafe { libc::memchr(rest.cast(), c_int::from(b'\n'), n) };
    if nl.is_null() {
        n
    } else {
        nl as usize - rest as usize + 1
    }
}

/// Returns the next line: stores in `*line` a pointer into the map at the
/// cursor and in `*len` the number of bytes through the next `'\n'`
/// (included), or to the end when no `'\n'` follows, and moves the cursor
/// past them, like Python's `readline()`. At the end it returns `CONC_OK`
/// with `*len == 0` (and `*line` pointing at the end), so a loop reads
/// until `*len == 0`. The line is not NUL-terminated and stays valid until
/// `conc_mmap_close` (or `conc_mmap_resize`). The cursor belongs to the
/// handle: use one handle per thread for readline loops.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map`, `line` or `len` is NULL;
/// `CONC_ERR_IO` if the file shrank under the map (see `conc_mmap`).
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
    // The hot path of the readline loop: every check of the full path
    // below (a live handle of the right kind, both outputs non-NULL, the
    // map not damaged), with the handle looked up inline and no error
    // value built, so that the call costs a few loads and two thread-local
    // stores on top of memchr. Anything else goes to the full path, which
    // makes the error. Nothing here can panic; the guard stays all the same.
    //
    // What the loop costs is latency, not instructions. Each line ends
    // with a mispredicted branch in memchr (where the newline falls), and
    // what runs from there to the next memchr's first load is the price
    // (2-core EPYC, 10M lines of 60-114 bytes, ratio to a bare C memchr
    // loop over the same map): 1.85 with a segmented handle table and the
    // cursor as an offset in the map; 1.77 with the static slot array (no
    // bit scan, no segment load); 1.45 with the cursor as an address (no
    // add); 1.35 with the one-compare tag check; 1.30 to 1.36 (from day to
    // day) with the cursor in the handle's slot (no load of the map's
    // address before the cursor's). What is left over the C loop: the
    // call, the tag check, the SIGBUS guard's two thread-local stores, the
    // cursor's round trip through memory. (0.1's library, which checked
    // nothing, measures 1.55 to 1.60 on the same days.) Keeping no
    // previous value across memchr in the guard (one live value fewer)
    // measured the same.
    // Fewer instructions did not help: dropping the guard, or the `left`
    // test, measured slower, so keep to measurements when changing this.
    ffi::guard_value(OP, crate::error::CONC_ERR_PANIC, || {
        if let Some((m, cursor)) = crate::handle::lookup_aux(map.cast_const()) {
            let (data, total) = m.view();
            let rest = cursor.load(Ordering::Relaxed);
            let left = (data as usize + total).wrapping_sub(rest as usize);
            // `rest` inside the map or at its end (always so, unless a
            // racing resize broke the contract: then the full path clamps).
            // One test covers both ends: below `data`, `left` exceeds
            // `total` (a map's end is far from the top of the address
            // space, so the sum does not wrap).
            if !line.is_null() && !len.is_null() && left <= total {
                let n = if left == 0 {
                    0
                } else {
                    m.region.access(|| line_len(rest, left))
                };
                if m.region.hit() {
                    return m.damaged_status(OP);
                }
                // SAFETY: both non-NULL and writable, per the contract.
                unsafe {
                    *line = rest;
                    *len = n;
                }
                cursor.store(rest.wrapping_add(n), Ordering::Relaxed);
                return crate::error::CONC_OK;
            }
        }
        // SAFETY: forwarded caller contract.
        unsafe { readline_checked(map, line, len) }
    })
}

/// `conc_mmap_readline` when its fast path cannot answer: the error (or
/// the line, if the map became usable meanwhile), through `ffi::guard`.
///
/// # Safety
/// As for `conc_mmap_readline`.
#[cold]
#[inline(never)]
unsafe extern "C" fn readline_checked(
    map: *mut conc_mmap,
    line: *mut *const u8,
    len: *mut usize,
) -> conc_status {
    const OP: &str = "conc_mmap_readline";
    ffi::guard(OP, || {
        let (m, cursor) = get_map(map.cast_const(), OP)?;
        // SAFETY: `line` is NULL or writable, per the caller's contract.
        let line = unsafe { ffi::out_ref(line, OP, "line") }?;
        // SAFETY: `len` is NULL or writable, per the caller's contract.
        let len = unsafe { ffi::out_ref(len, OP, "len") }?;
        let (data, total) = m.view();
        let pos = cursor.offset(data, total);
        // SAFETY: pos <= total: `rest` is inside the map or at its end.
        let rest = unsafe { data.add(pos) };
        let n = if pos == total {
            if m.region.hit() {
                return Err(m.damaged(OP));
            }
            0
        } else {
            m.guarded(OP, || line_len(rest, total - pos))?
        };
        *line = rest;
        *len = n;
        cursor.set(data, pos + n);
        Ok(())
    })
}

/// Copies up to `count` bytes from the cursor into `buf`, stores how many
/// in `*got` (fewer near the end, 0 at the end) and moves the cursor past
/// them, like Python's `read(n)`. `buf` may be NULL when `count` is 0, and
/// may point into the map itself.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` or `got` is NULL, or `buf`
/// is NULL with `count > 0`; `CONC_ERR_IO` if the file shrank under the
/// map (see `conc_mmap`). On failure `*got` and the cursor are unchanged.
///
/// # Safety
/// `map` must be NULL or an open map; `buf` NULL or writable for `count`
/// bytes; `got` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_read(
    map: *mut conc_mmap,
    buf: *mut c_void,
    count: usize,
    got: *mut usize,
) -> conc_status {
    const OP: &str = "conc_mmap_read";
    ffi::guard(OP, || {
        let (m, cursor) = get_map(map.cast_const(), OP)?;
        if count > 0 {
            ffi::not_null(buf, OP, "buf")?;
        }
        // SAFETY: `got` is NULL or writable, per the caller's contract.
        let got = unsafe { ffi::out_ref(got, OP, "got") }?;
        let (data, len) = m.view();
        let pos = cursor.offset(data, len);
        let n = count.min(len - pos);
        if n > 0 {
            // SAFETY: [pos, pos + n) is inside the map; `buf` is writable
            // for count >= n bytes; ptr::copy allows the two to overlap.
            m.guarded(OP, || unsafe {
                ptr::copy(data.add(pos), buf.cast::<u8>(), n)
            })?;
        } else if m.region.hit() {
            return Err(m.damaged(OP));
        }
        *got = n;
        cursor.set(data, pos + n);
        Ok(())
    })
}

/// Copies the `count` bytes at `data` into the map at the cursor and moves
/// the cursor past them, like Python's `write(bytes)`. On a
/// `CONC_ACCESS_WRITE` map they reach the file, on a `CONC_ACCESS_COPY` map
/// they stay private. `data` may be NULL when `count` is 0, and may point
/// into the map itself.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` is NULL, or `data` is NULL
/// with `count > 0`; `CONC_ERR_PERMISSION_DENIED` for a `CONC_ACCESS_READ`
/// map; `CONC_ERR_OUT_OF_RANGE` if the bytes would reach past the end of
/// the map (nothing is written, the cursor stays); `CONC_ERR_IO` if the
/// file shrank under the map (see `conc_mmap`).
///
/// # Safety
/// `map` must be NULL or an open map; `data` NULL or readable for `count`
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_write(
    map: *mut conc_mmap,
    data: *const c_void,
    count: usize,
) -> conc_status {
    const OP: &str = "conc_mmap_write";
    ffi::guard(OP, || {
        let (m, cursor) = get_map(map.cast_const(), OP)?;
        if count > 0 {
            ffi::not_null(data, OP, "data")?;
        }
        m.require_writable(OP)?;
        let (dst, len) = m.view();
        let pos = cursor.offset(dst, len);
        if count > len - pos {
            return Err(Error::new(
                CONC_ERR_OUT_OF_RANGE,
                format_args!(
                    "{}: {count} bytes at the cursor ({pos}) reach past the end ({len} bytes)",
                    m.ctx(OP)
                ),
            ));
        }
        if count > 0 {
            // SAFETY: [pos, pos + count) is inside the writable map; `data`
            // is readable for count bytes; ptr::copy allows overlap.
            m.guarded(OP, || unsafe {
                ptr::copy(data.cast::<u8>(), dst.add(pos), count)
            })?;
        }
        cursor.set(dst, pos + count);
        Ok(())
    })
}

/// Stores `byte` in the map at the cursor and moves the cursor past it,
/// like Python's `write_byte()`.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` is NULL;
/// `CONC_ERR_PERMISSION_DENIED` for a `CONC_ACCESS_READ` map;
/// `CONC_ERR_OUT_OF_RANGE` if the cursor is at the end; `CONC_ERR_IO` if
/// the file shrank under the map (see `conc_mmap`).
///
/// # Safety
/// `map` must be NULL or an open map.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_write_byte(map: *mut conc_mmap, byte: u8) -> conc_status {
    const OP: &str = "conc_mmap_write_byte";
    ffi::guard(OP, || {
        let (m, cursor) = get_map(map.cast_const(), OP)?;
        m.require_writable(OP)?;
        let (data, len) = m.view();
        let pos = cursor.offset(data, len);
        if pos == len {
            return Err(at_end(m, OP, pos));
        }
        // SAFETY: pos < len, inside the writable map.
        m.guarded(OP, || unsafe { data.add(pos).write_volatile(byte) })?;
        cursor.set(data, pos + 1);
        Ok(())
    })
}

/// Copies `count` bytes of the map from offset `src` to offset `dest`, as
/// `memmove` (the ranges may overlap), like Python's `move(dest, src,
/// count)`. The cursor does not move.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` is NULL;
/// `CONC_ERR_PERMISSION_DENIED` for a `CONC_ACCESS_READ` map;
/// `CONC_ERR_OUT_OF_RANGE` if `dest` or `src` is past the end (even with
/// `count` 0) or either range reaches past it (nothing is moved);
/// `CONC_ERR_IO` if the file shrank under the map (see `conc_mmap`).
///
/// # Safety
/// `map` must be NULL or an open map.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_move(
    map: *mut conc_mmap,
    dest: u64,
    src: u64,
    count: usize,
) -> conc_status {
    const OP: &str = "conc_mmap_move";
    ffi::guard(OP, || {
        let m = crate::handle::get(map.cast_const(), OP, "map")?;
        m.require_writable(OP)?;
        let (data, len) = m.view();
        let fits = |at: u64| at <= len as u64 && count as u64 <= len as u64 - at;
        if !fits(dest) || !fits(src) {
            return Err(Error::new(
                CONC_ERR_OUT_OF_RANGE,
                format_args!(
                    "{}: moving {count} bytes from {src} to {dest} reaches past the end \
                     ({len} bytes)",
                    m.ctx(OP)
                ),
            ));
        }
        if count > 0 && dest != src {
            // SAFETY: both ranges are inside the writable map (checked
            // above); ptr::copy is memmove.
            m.guarded(OP, || unsafe {
                ptr::copy(data.add(src as usize), data.add(dest as usize), count)
            })?;
        } else if m.region.hit() {
            return Err(m.damaged(OP));
        }
        Ok(())
    })
}

/// Resizes a whole-file `CONC_ACCESS_WRITE` map (`[0, len)` of `file`),
/// changing the file's size.
fn resize_file(m: &conc_mmap, file: &File, new_len: usize, ctx: &str) -> Result<()> {
    let fd = file.as_raw_fd();
    let old_len = m.len();
    let base = m.base.load(Ordering::Relaxed);
    let map_len = m.map_len.load(Ordering::Relaxed);
    let old_size = file
        .metadata()
        .map_err(|e| Error::os(ctx, e.raw_os_error().unwrap_or(libc::EIO)))?
        .len();
    let new_off = libc::off_t::try_from(new_len).map_err(|_| {
        Error::new(
            CONC_ERR_RESOURCE_EXHAUSTED,
            format_args!("{ctx}: {new_len} bytes is too large for a file"),
        )
    })?;
    let set_size = |size: libc::off_t| -> Result<()> {
        // SAFETY: ftruncate on a descriptor the map owns.
        if unsafe { libc::ftruncate(fd, size) } != 0 {
            return Err(Error::last_os(ctx));
        }
        Ok(())
    };
    if new_len > old_len {
        // Reserve first: a full disk fails here, and the file is put back.
        if let Err(err) = reserve(file, new_len, ctx) {
            let _ = set_size(old_size as libc::off_t);
            return Err(err);
        }
        set_size(new_off)?;
        let new_base = if base.is_null() {
            // SAFETY: a fresh shared mapping of the map's own descriptor.
            unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    new_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            }
        } else {
            // SAFETY: base/map_len are this map's mapping; the kernel may
            // move it, which the contract allows (no other call runs).
            unsafe { libc::mremap(base, map_len, new_len, libc::MREMAP_MAYMOVE) }
        };
        if new_base == libc::MAP_FAILED {
            let err = mmap_error(ctx, crate::error::errno());
            let _ = set_size(old_size as libc::off_t);
            return Err(err);
        }
        m.set_mapping(new_base, new_len, 0);
    } else {
        if new_len == 0 {
            m.unmap().map_err(|errno| Error::os(ctx, errno))?;
        } else if new_len < old_len {
            // SAFETY: shrinking this map's own mapping in place.
            let p = unsafe { libc::mremap(base, map_len, new_len, 0) };
            if p == libc::MAP_FAILED {
                return Err(mmap_error(ctx, crate::error::errno()));
            }
            m.set_mapping(p, new_len, 0);
        }
        // The mapping no longer reaches past the new end: no SIGBUS.
        set_size(new_off)?;
    }
    Ok(())
}

/// Resizes an anonymous map, keeping its contents up to the shorter length.
fn resize_anonymous(m: &conc_mmap, new_len: usize, ctx: &str) -> Result<()> {
    let (data, old_len) = m.view();
    let base = m.base.load(Ordering::Relaxed);
    if new_len == 0 {
        return m.unmap().map_err(|errno| Error::os(ctx, errno));
    }
    if new_len <= old_len {
        // SAFETY: shrinking this map's own mapping in place.
        let p = unsafe { libc::mremap(base, old_len, new_len, 0) };
        if p == libc::MAP_FAILED {
            return Err(mmap_error(ctx, crate::error::errno()));
        }
        m.set_mapping(p, new_len, 0);
        return Ok(());
    }
    // Shared anonymous memory cannot grow in place (its pages past the
    // first size would raise SIGBUS): a new mapping, and a copy.
    let new_base = map_anonymous(new_len).map_err(|errno| mmap_error(ctx, errno))?;
    if old_len > 0 {
        // SAFETY: two distinct mappings, of at least old_len bytes each.
        unsafe { ptr::copy_nonoverlapping(data, new_base.cast::<u8>(), old_len) };
        // SAFETY: the old mapping is this map's, no longer used.
        unsafe { libc::munmap(base, old_len) };
    }
    m.set_mapping(new_base, new_len, 0);
    Ok(())
}

/// Changes the map's length to `new_len` bytes, like Python's
/// `resize(newsize)`.
///
/// - A whole-file `CONC_ACCESS_WRITE` map (from `conc_mmap_create`,
///   `conc_mmap_open`, or `conc_mmap_open_range` at offset 0 with length 0)
///   also changes the file's size to `new_len`, the one call that does.
///   Growing reserves the new space first (`posix_fallocate`): a full disk
///   fails here (the file keeps its size), and the new bytes are zero.
/// - An anonymous map keeps its contents up to the shorter length; the
///   new bytes are zero. Growing it moves it to new memory, which children
///   forked before no longer share.
/// - `new_len` 0 gives an empty map (and an empty file).
///
/// The bytes may move: fetch `conc_mmap_data` again, and do not use
/// earlier pointers into the map (lines from `conc_mmap_readline`
/// included). The cursor is clamped to the new length. No other call may
/// use the map while it is resized (from another thread).
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` is NULL;
/// `CONC_ERR_INVALID_STATE` for a map of a range of a file, or a
/// `CONC_ACCESS_READ` or `CONC_ACCESS_COPY` map;
/// `CONC_ERR_RESOURCE_EXHAUSTED` if the disk is full or memory runs out
/// (the map and the file are unchanged); `CONC_ERR_IO` if the map is
/// damaged (its file shrank under it, see `conc_mmap`), or for other OS
/// failures.
///
/// # Safety
/// `map` must be NULL or an open map that no other thread is using.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_resize(map: *mut conc_mmap, new_len: usize) -> conc_status {
    const OP: &str = "conc_mmap_resize";
    ffi::guard(OP, || {
        let (m, cursor) = get_map(map.cast_const(), OP)?;
        // The cursor keeps its offset, clamped to the new length, whether
        // the bytes moved or not (nor whether the resize succeeded).
        let (data, len) = m.view();
        let pos = cursor.offset(data, len);
        let done = resize(m, new_len);
        let (data, len) = m.view();
        cursor.set(data, pos.min(len));
        done
    })
}

/// `conc_mmap_resize` once the map is found.
fn resize(m: &conc_mmap, new_len: usize) -> Result<()> {
    const OP: &str = "conc_mmap_resize";
    let ctx = crate::msg!("{}, to {new_len} bytes", m.ctx(OP));
    if m.anonymous {
        return resize_anonymous(m, new_len, &ctx);
    }
    match &m.file {
        Some(_) if m.region.hit() => Err(m.damaged(OP)),
        Some(file) => resize_file(m, file, new_len, &ctx),
        None => Err(Error::new(
            CONC_ERR_INVALID_STATE,
            format_args!(
                "{ctx}: only a whole-file CONC_ACCESS_WRITE map or an anonymous map can be \
                 resized (this one is {})",
                match m.access {
                    CONC_ACCESS_READ => "CONC_ACCESS_READ",
                    CONC_ACCESS_COPY => "CONC_ACCESS_COPY",
                    CONC_ACCESS_WRITE => "a map of a range of the file",
                }
            ),
        )),
    }
}

/// Tells the OS how the `length` bytes of the map from `offset` (length 0:
/// to the end) will be used, with `madvise`, like Python's `madvise`. The
/// hint covers the whole pages the range touches.
///
/// `CONC_ADVICE_DONTNEED` frees those pages: a `CONC_ACCESS_READ` or
/// `CONC_ACCESS_WRITE` map reads them from the file again (nothing is
/// lost), but a `CONC_ACCESS_COPY` map loses its private changes in them
/// (they read as the file again) and an anonymous map, which is shared
/// memory, keeps its contents. An empty range does nothing.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` is NULL or `advice` is not
/// a `conc_advice` value; `CONC_ERR_OUT_OF_RANGE` if `offset` is past the
/// end of the map or `offset + length` reaches past it; `CONC_ERR_IO` (or
/// the status of the OS error) if the OS refuses the hint.
///
/// # Safety
/// `map` must be NULL or an open map.
#[no_mangle]
pub unsafe extern "C" fn conc_mmap_advise(
    map: *mut conc_mmap,
    advice: RawAdvice,
    offset: u64,
    length: usize,
) -> conc_status {
    const OP: &str = "conc_mmap_advise";
    ffi::guard(OP, || {
        let m = crate::handle::get(map.cast_const(), OP, "map")?;
        let ctx = crate::msg!("{}, offset {offset}, length {length}", m.ctx(OP));
        let advice = match advice.get(&ctx)? {
            CONC_ADVICE_NORMAL => libc::MADV_NORMAL,
            CONC_ADVICE_RANDOM => libc::MADV_RANDOM,
            CONC_ADVICE_SEQUENTIAL => libc::MADV_SEQUENTIAL,
            CONC_ADVICE_WILLNEED => libc::MADV_WILLNEED,
            CONC_ADVICE_DONTNEED => libc::MADV_DONTNEED,
        };
        let (data, len) = m.view();
        let end = match (usize::try_from(offset), length) {
            (Ok(at), 0) if at <= len => len,
            (Ok(at), n) if at <= len && n <= len - at => at + n,
            _ => {
                return Err(Error::new(
                    CONC_ERR_OUT_OF_RANGE,
                    format_args!("{ctx}: the range reaches past the end ({len} bytes)"),
                ))
            }
        };
        let at = offset as usize;
        if end == at {
            return Ok(());
        }
        let page = page_size() as usize;
        let first = data as usize + at;
        let start = first & !(page - 1);
        let extent = data as usize + end - start;
        // SAFETY: [start, start + extent) lies in this map's OS mapping
        // (its base is page aligned and at most `first`); madvise only
        // changes how the kernel treats those pages.
        if unsafe { libc::madvise(start as *mut c_void, extent, advice) } != 0 {
            return Err(Error::last_os(ctx));
        }
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
        let (m, cursor) = get_map(map.cast_const(), OP)?;
        let ctx = m.ctx(OP);
        let origin = match whence.get(&ctx)? {
            CONC_SEEK_SET => 0,
            CONC_SEEK_CUR => {
                let (data, len) = m.view();
                cursor.offset(data, len)
            }
            CONC_SEEK_END => m.len(),
        };
        let len = m.len();
        let target = origin as i128 + offset as i128;
        if target < 0 || target > len as i128 {
            return Err(Error::new(
                CONC_ERR_OUT_OF_RANGE,
                format_args!(
                    "{ctx}: offset {offset} from {origin} gives {target}, outside 0..={len}"
                ),
            ));
        }
        cursor.set(m.view().0, target as usize);
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
        crate::handle::lookup_aux(map).map_or(0, |(m, aux)| {
            let (data, len) = m.view();
            Cursor(aux).offset(data, len) as u64
        })
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
                    m.guarded(op, || memchr::memmem::rfind(tail, needle))?
                } else {
                    m.guarded(op, || memchr::memmem::find(tail, needle))?
                };
                at.map(|i| i + start)
            }
            _ => None,
        };
        if m.region.hit() {
            return Err(m.damaged(op));
        }
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
/// `needle` is NULL with `needle_len > 0`; `CONC_ERR_IO` if the file shrank
/// under the map (see `conc_mmap`).
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
/// `needle` is NULL with `needle_len > 0`; `CONC_ERR_IO` if the file shrank
/// under the map (see `conc_mmap`).
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

/// How `conc_mmap_count_lines` shares out a map: maps shorter than twice
/// this size (or any map on one core) are counted by the calling thread
/// alone; longer ones are cut into 8 MiB pieces at addresses that are
/// multiples of 8 MiB, which the calling thread and the threads of the
/// default pool take one after another until none is left. Given for
/// tests and tuning; the result never depends on it.
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

/// Whether the heap can still give what starting `threads` std threads
/// allocates (names, handles, closures: well under 4 KiB each). std aborts
/// when one of those allocations fails, so with memory that short the
/// count runs on the calling thread alone.
fn heap_allows_threads(threads: usize) -> bool {
    let mut probe = Vec::<u8>::new();
    let ok = probe
        .try_reserve_exact(threads.saturating_mul(4096))
        .is_ok();
    // Keeps the allocation from being optimised away.
    std::hint::black_box(&probe);
    ok
}

/// What a readline loop over `data` returns: the newlines, plus one when
/// `data` does not end with one. Split between `threads` threads.
pub fn count_lines_split(data: &[u8], threads: usize) -> u64 {
    let unterminated = data.last().is_some_and(|&b| b != b'\n');
    newlines_split(data, threads, &count_newlines) as u64 + u64::from(unterminated)
}

/// The newlines of `data`, split between `threads` threads, each part
/// counted by `count_newlines` on the thread that counts it (so that the
/// SIGBUS guard, which is per thread, covers it).
fn newlines_split(
    data: &[u8],
    threads: usize,
    count_newlines: &(dyn Fn(&[u8]) -> usize + Sync),
) -> usize {
    if threads <= 1 || !heap_allows_threads(threads) {
        count_newlines(data)
    } else {
        let len = data.len();
        let piece =
            |i: usize| &data[split_point(len, i, threads)..split_point(len, i + 1, threads)];
        // One piece per call on the default pool (the calling thread takes
        // part), instead of a thread spawned per piece per call. Each piece
        // is counted on the thread that runs it, under that thread's SIGBUS
        // guard.
        let total = std::sync::atomic::AtomicUsize::new(0);
        crate::pool::for_ranges(threads, 1, &|b, e| {
            let n: usize = (b..e).map(|i| count_newlines(piece(i))).sum();
            total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        });
        total.into_inner()
    }
}

/// The size of the pieces `conc_mmap_count_lines` deals out on a map
/// large enough for threads (see `CONC_MMAP_COUNT_CHUNK`): each thread of
/// the default pool (and the caller) takes the next piece when it is done
/// with one, so a thread slowed down by other work on its core counts
/// fewer pieces instead of holding back the end. A multiple of 2 MiB.
///
/// Measured on the 2-core development machine (shared, load 2-6), 880 MB
/// file, whole processes against `wc -l`: with a spinning process on the
/// other core 0.43x against 0.50x for one share per core (paired median
/// of 15 rounds 0.87; 0.36x against 0.41x at load 6); quiet, the same
/// 0.34x either way. Pieces of 2, 4, 16 or 64 MiB measured alike.
const COUNT_PIECE: usize = 8 << 20;

/// Piece `i` of the pieces `data` is cut into: boundaries at the addresses
/// that are multiples of `piece` (a power of two), so no large folio of
/// the page cache (at most 2 MiB, aligned) is faulted in by two threads.
fn piece_of(data: &[u8], piece: usize, i: usize) -> &[u8] {
    let (start, len) = (data.as_ptr() as usize, data.len());
    // Where piece 1 starts: the first multiple of `piece` past `start`.
    let first = piece - start % piece;
    let b = if i == 0 {
        0
    } else {
        first.saturating_add((i - 1).saturating_mul(piece)).min(len)
    };
    let e = first.saturating_add(i.saturating_mul(piece)).min(len);
    &data[b..e]
}

/// How many pieces `piece_of` cuts `data` into (at least 1).
fn pieces(data: &[u8], piece: usize) -> usize {
    let first = piece - data.as_ptr() as usize % piece;
    1 + data.len().saturating_sub(first).div_ceil(piece)
}

/// The newlines of `data` counted piece by piece (`piece` bytes, aligned,
/// see `piece_of`) on the default pool, each piece by `count_newlines` on
/// the thread that takes it (so that its SIGBUS guard covers it).
fn newlines_pieces(
    data: &[u8],
    piece: usize,
    count_newlines: &(dyn Fn(&[u8]) -> usize + Sync),
) -> usize {
    let total = std::sync::atomic::AtomicUsize::new(0);
    crate::pool::for_ranges(pieces(data, piece), 1, &|b, e| {
        let n: usize = (b..e)
            .map(|i| count_newlines(piece_of(data, piece, i)))
            .sum();
        total.fetch_add(n, Ordering::Relaxed);
    });
    total.into_inner()
}

/// The number of cores `count_lines` may use, found once (see [`cores`]).
static CORES: OnceLock<usize> = OnceLock::new();

/// The number of cores `count_lines` may use.
fn cores() -> usize {
    // Asking the OS reads the cgroup's CPU quota: a few microseconds, so once.
    *CORES.get_or_init(crate::cpus::available)
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
/// bytes every core: the calling thread and the default pool's threads
/// count 8 MiB pieces, each taking the next one when done, so a core
/// busy with other work holds back the end by one piece at most.
///
/// Errors: `CONC_ERR_INVALID_ARGUMENT` if `map` or `lines` is NULL;
/// `CONC_ERR_IO` if the file shrank under the map (see `conc_mmap`).
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
        // No madvise and no MAP_POPULATE: on the 880 MB benchmark file
        // (median of 25 interleaved processes) MADV_SEQUENTIAL gave 67.8 ms,
        // MADV_WILLNEED 64.4 ms, MADV_HUGEPAGE 75.4 ms and
        // MADV_POPULATE_READ 87.3 ms against 63.3 ms without. Populating
        // walks the pages one by one (MAP_POPULATE: 23 ms of system time,
        // MADV_POPULATE_READ 25 ms), while a fault maps a whole large folio
        // of the page cache at once (~930 faults and 8 ms when the file was
        // just written in 1 MiB folios; ~700 faults and 2-4 ms when it was
        // read from disk in 2 MiB folios, which are mapped by PMD). So the
        // pages are faulted by the threads that count them, each in its
        // own pieces.
        let data = m.bytes();
        let threads = count_threads(data.len(), CONC_MMAP_COUNT_CHUNK, cores());
        // Each thread counts its pieces under the guard (set on that thread).
        let guarded = |part: &[u8]| m.region.access(|| count_newlines(part));
        let newlines = if threads <= 1 {
            guarded(data)
        } else {
            newlines_pieces(data, COUNT_PIECE, &guarded)
        };
        let unterminated = m.guarded(OP, || data.last().is_some_and(|&b| b != b'\n'))?;
        *lines = newlines as u64 + u64::from(unterminated);
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
        let base = m.base.load(Ordering::Relaxed);
        if m.access != CONC_ACCESS_WRITE || m.anonymous || base.is_null() {
            return Ok(());
        }
        let map_len = m.map_len.load(Ordering::Relaxed);
        // SAFETY: `base`/`map_len` describe this handle's live mapping.
        if unsafe { libc::msync(base, map_len, libc::MS_SYNC) } != 0 {
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
        let m = crate::handle::release(map, OP, "map")?;
        let ctx = m.ctx(OP);
        m.unmap()
            .map_err(|errno| Error::os(ctx, errno).with_status(CONC_ERR_IO))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{last_error_message, CONC_ERR_ALREADY_EXISTS, CONC_ERR_NOT_FOUND, CONC_OK};
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
                            4 => seed.is_multiple_of(5),
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
    fn pieces_cover_the_data_at_aligned_boundaries() {
        let buf: Vec<u8> = (0..700u32)
            .map(|i| if i % 7 == 0 { b'\n' } else { b'x' })
            .collect();
        for piece in [16usize, 32, 64] {
            for start in 0..70 {
                for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 200, 500] {
                    let data = &buf[start..start + len];
                    let n = pieces(data, piece);
                    let mut at = 0;
                    for i in 0..n {
                        let p = piece_of(data, piece, i);
                        assert_eq!(p.as_ptr() as usize, data.as_ptr() as usize + at);
                        if i > 0 {
                            assert_eq!(p.as_ptr() as usize % piece, 0);
                            assert!(!p.is_empty());
                        }
                        assert!(p.len() <= piece);
                        at += p.len();
                    }
                    assert_eq!(at, len, "start {start} len {len} piece {piece}");
                    let want = data.iter().filter(|&&b| b == b'\n').count();
                    assert_eq!(newlines_pieces(data, piece, &count_newlines), want);
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
    fn count_lines_at_the_real_piece_boundaries() {
        // An anonymous map over three pieces, with newlines on and next to
        // every piece boundary (addresses that are multiples of
        // COUNT_PIECE), and at unaligned offsets too.
        for extra in [0usize, 4095, 4096 * 3 + 17] {
            let len = 3 * COUNT_PIECE + extra;
            let mut map = ptr::null_mut();
            // SAFETY: a local out pointer; the map is closed below.
            assert_eq!(unsafe { conc_mmap_anonymous(&mut map, len) }, CONC_OK);
            // SAFETY: an open anonymous map of `len` bytes, used only here.
            let data = unsafe { std::slice::from_raw_parts_mut(conc_mmap_data_mut(map), len) };
            data.fill(b'x');
            for i in (0..len).step_by(4099) {
                data[i] = b'\n';
            }
            let base = data.as_ptr() as usize;
            let first = COUNT_PIECE - base % COUNT_PIECE;
            for at in (first..len).step_by(COUNT_PIECE) {
                data[at - 1] = b'\n';
                data[at] = b'\n';
                if at + 1 < len {
                    data[at + 1] = b'y';
                }
            }
            for end in [b'\n', b'e'] {
                data[len - 1] = end;
                let want = naive_lines(data);
                let mut n = 0;
                // SAFETY: an open map; a local.
                assert_eq!(unsafe { conc_mmap_count_lines(map, &mut n) }, CONC_OK);
                assert_eq!(n, want, "len {len}");
            }
            close(map);
        }
    }

    #[test]
    fn a_new_map_starts_at_its_first_byte_in_a_reused_slot() {
        // The cursor lives in the handle's slot: a map opened after another
        // closed (usually in the same slot) must not inherit its cursor.
        let f = TempFile::new(b"ab\ncd\n");
        for _ in 0..3 {
            let (s, map) = open(&f.0, 0);
            assert_eq!(s, CONC_OK);
            // SAFETY: map is open, then closed once.
            unsafe {
                assert_eq!(conc_mmap_tell(map), 0);
                assert_eq!(lines(map), [&b"ab\n"[..], b"cd\n"].map(<[u8]>::to_vec));
                assert_eq!(conc_mmap_seek(map, 4, RawWhence(0)), CONC_OK);
                assert_eq!(conc_mmap_close(map), CONC_OK);
                assert_eq!(conc_mmap_tell(map), 0);
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

    fn create(path: &CStr, size: usize) -> (conc_status, *mut conc_mmap) {
        let mut map = ptr::null_mut();
        // SAFETY: valid out pointer and C string.
        let s = unsafe { conc_mmap_create(&mut map, path.as_ptr(), size) };
        (s, map)
    }

    fn fresh_path() -> TempFile {
        let f = TempFile::new(b"");
        std::fs::remove_file(f.path()).unwrap();
        f
    }

    #[test]
    fn create_write_read_move_and_resize() {
        let f = fresh_path();
        let (s, map) = create(&f.0, 10);
        assert_eq!(s, CONC_OK, "{}", last_error_message());
        assert_eq!(std::fs::metadata(f.path()).unwrap().len(), 10);
        assert_eq!(contents(map), vec![0u8; 10]);
        // SAFETY: map is open; buffers are locals.
        unsafe {
            assert_eq!(conc_mmap_write(map, b"hello".as_ptr().cast(), 5), CONC_OK);
            assert_eq!(conc_mmap_tell(map), 5);
            assert_eq!(conc_mmap_write_byte(map, b'!'), CONC_OK);
            assert_eq!(
                conc_mmap_write(map, b"world".as_ptr().cast(), 5),
                CONC_ERR_OUT_OF_RANGE
            );
            assert_eq!(conc_mmap_tell(map), 6);
            assert_eq!(conc_mmap_write(map, ptr::null(), 0), CONC_OK);
            assert_eq!(
                conc_mmap_write(map, ptr::null(), 1),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert_eq!(conc_mmap_move(map, 1, 0, 5), CONC_OK);
            assert_eq!(conc_mmap_tell(map), 6);
            assert_eq!(&contents(map)[..7], b"hhello\0");
            assert_eq!(conc_mmap_move(map, 11, 0, 0), CONC_ERR_OUT_OF_RANGE);
            assert_eq!(conc_mmap_move(map, 0, 11, 0), CONC_ERR_OUT_OF_RANGE);
            assert_eq!(conc_mmap_move(map, 10, 10, 0), CONC_OK);
            assert_eq!(conc_mmap_move(map, 6, 0, 5), CONC_ERR_OUT_OF_RANGE);
            assert_eq!(conc_mmap_seek(map, 0, RawWhence(0)), CONC_OK);
            let mut buf = [0u8; 16];
            let mut got = 99;
            assert_eq!(
                conc_mmap_read(map, buf.as_mut_ptr().cast(), 4, &mut got),
                CONC_OK
            );
            assert_eq!((got, &buf[..4]), (4, &b"hhel"[..]));
            assert_eq!(
                conc_mmap_read(map, buf.as_mut_ptr().cast(), 16, &mut got),
                CONC_OK
            );
            assert_eq!(got, 6);
            assert_eq!(
                conc_mmap_read(map, buf.as_mut_ptr().cast(), 16, &mut got),
                CONC_OK
            );
            assert_eq!(got, 0);
            // Grow: the file follows, new bytes are zero, the cursor stays.
            assert_eq!(conc_mmap_resize(map, 9000), CONC_OK);
            assert_eq!(conc_mmap_len(map), 9000);
            assert_eq!(conc_mmap_tell(map), 10);
            assert_eq!(std::fs::metadata(f.path()).unwrap().len(), 9000);
            let c = contents(map);
            assert_eq!(&c[..6], b"hhello");
            assert!(c[10..].iter().all(|&b| b == 0));
            // Shrink: the cursor is clamped.
            assert_eq!(conc_mmap_resize(map, 3), CONC_OK);
            assert_eq!(conc_mmap_tell(map), 3);
            assert_eq!(std::fs::read(f.path()).unwrap(), b"hhe");
            assert_eq!(conc_mmap_resize(map, 0), CONC_OK);
            assert_eq!(conc_mmap_len(map), 0);
            assert!(!conc_mmap_data(map).is_null());
            assert_eq!(std::fs::metadata(f.path()).unwrap().len(), 0);
            assert_eq!(conc_mmap_resize(map, 5), CONC_OK);
            assert_eq!(contents(map), vec![0u8; 5]);
            assert_eq!(conc_mmap_flush(map), CONC_OK);
        }
        close(map);
        // Exists now: refused, and the file is kept.
        let (s, map) = create(&f.0, 10);
        assert_eq!(s, CONC_ERR_ALREADY_EXISTS);
        assert!(map.is_null());
        assert_eq!(std::fs::metadata(f.path()).unwrap().len(), 5);
        // A failure leaves nothing behind.
        let g = fresh_path();
        let (s, _) = create(&g.0, usize::MAX / 2);
        assert_eq!(s, CONC_ERR_RESOURCE_EXHAUSTED, "{}", last_error_message());
        assert!(!g.path().exists());
        let (s, map) = create(&g.0, 0);
        assert_eq!(s, CONC_OK);
        assert_eq!(conc_mmap_len_of(map), 0);
        close(map);
    }

    fn conc_mmap_len_of(map: *mut conc_mmap) -> usize {
        // SAFETY: map is open.
        unsafe { conc_mmap_len(map) }
    }

    #[test]
    fn resize_refuses_ranges_read_and_copy_maps() {
        let f = TempFile::new(b"0123456789");
        for (access, range) in [(0u32, false), (2, false), (1, true)] {
            let map = if range {
                let mut m = ptr::null_mut();
                // SAFETY: valid out pointer and C string.
                let s = unsafe { conc_mmap_open_range(&mut m, f.0.as_ptr(), RawAccess(1), 1, 0) };
                assert_eq!(s, CONC_OK);
                m
            } else {
                open(&f.0, access).1
            };
            // SAFETY: map is open.
            assert_eq!(unsafe { conc_mmap_resize(map, 4) }, CONC_ERR_INVALID_STATE);
            assert!(last_error_message().contains("conc_mmap_resize"));
            close(map);
        }
        // offset 0, length 0: a whole-file map.
        let mut m = ptr::null_mut();
        // SAFETY: valid out pointer and C string; m is open after.
        unsafe {
            assert_eq!(
                conc_mmap_open_range(&mut m, f.0.as_ptr(), RawAccess(1), 0, 0),
                CONC_OK
            );
            assert_eq!(conc_mmap_resize(m, 4), CONC_OK);
        }
        close(m);
        assert_eq!(std::fs::read(f.path()).unwrap(), b"0123");
        let (_, map) = open(&f.0, 0);
        // SAFETY: map is open.
        unsafe {
            assert_eq!(conc_mmap_write_byte(map, 1), CONC_ERR_PERMISSION_DENIED);
            assert_eq!(
                conc_mmap_write(map, b"x".as_ptr().cast(), 1),
                CONC_ERR_PERMISSION_DENIED
            );
            assert_eq!(conc_mmap_move(map, 0, 1, 1), CONC_ERR_PERMISSION_DENIED);
            assert_eq!(
                conc_mmap_resize(ptr::null_mut(), 1),
                CONC_ERR_INVALID_ARGUMENT
            );
        }
        close(map);
    }

    #[test]
    fn anonymous_resize_keeps_contents() {
        let mut map = ptr::null_mut();
        // SAFETY: valid out pointer; map is open after.
        unsafe {
            assert_eq!(conc_mmap_anonymous(&mut map, 100), CONC_OK);
            let d = conc_mmap_data_mut(map);
            for i in 0..100 {
                *d.add(i) = i as u8;
            }
            assert_eq!(conc_mmap_seek(map, 0, RawWhence(2)), CONC_OK);
            assert_eq!(conc_mmap_resize(map, 50_000), CONC_OK);
            assert_eq!(conc_mmap_tell(map), 100);
            let c = contents(map);
            assert_eq!(c.len(), 50_000);
            assert!(c[..100].iter().enumerate().all(|(i, &b)| b == i as u8));
            assert!(c[100..].iter().all(|&b| b == 0));
            *conc_mmap_data_mut(map).add(49_999) = 7;
            assert_eq!(conc_mmap_resize(map, 10), CONC_OK);
            assert_eq!(conc_mmap_tell(map), 10);
            assert_eq!(contents(map), (0..10).collect::<Vec<u8>>());
            assert_eq!(conc_mmap_resize(map, 0), CONC_OK);
            assert_eq!(conc_mmap_resize(map, 3), CONC_OK);
            assert_eq!(contents(map), vec![0u8; 3]);
        }
        close(map);
    }

    #[test]
    fn advise_checks_its_range_and_value() {
        let content = vec![b'a'; 3 * 4096 + 5];
        let f = TempFile::new(&content);
        let (_, map) = open(&f.0, 2);
        // SAFETY: map is open (a COPY map: writable).
        unsafe {
            for advice in 0..5 {
                assert_eq!(conc_mmap_advise(map, RawAdvice(advice), 0, 0), CONC_OK);
                assert_eq!(conc_mmap_advise(map, RawAdvice(advice), 4097, 10), CONC_OK);
            }
            assert_eq!(
                conc_mmap_advise(map, RawAdvice(5), 0, 0),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert!(last_error_message().contains("conc_advice"));
            let len = content.len() as u64;
            assert_eq!(conc_mmap_advise(map, RawAdvice(0), len, 0), CONC_OK);
            assert_eq!(
                conc_mmap_advise(map, RawAdvice(0), len + 1, 0),
                CONC_ERR_OUT_OF_RANGE
            );
            assert_eq!(
                conc_mmap_advise(map, RawAdvice(0), len - 1, 2),
                CONC_ERR_OUT_OF_RANGE
            );
            assert_eq!(
                conc_mmap_advise(map, RawAdvice(0), 1, usize::MAX),
                CONC_ERR_OUT_OF_RANGE
            );
            // DONTNEED drops a COPY map's private changes.
            *conc_mmap_data_mut(map).add(5000) = b'Z';
            assert_eq!(conc_mmap_advise(map, RawAdvice(4), 4096, 4096), CONC_OK);
            assert_eq!(contents(map)[5000], b'a');
        }
        close(map);
    }

    #[test]
    fn a_truncated_file_gives_io_errors_not_sigbus() {
        let page = page_size() as usize;
        let content: Vec<u8> = (0..4 * page)
            .map(|i| if i % 50 == 49 { b'\n' } else { b'x' })
            .collect();
        type Call = fn(*mut conc_mmap) -> conc_status;
        let calls: [(&str, Call); 9] = [
            ("readline", |m| {
                let (mut l, mut n) = (ptr::null(), 0);
                loop {
                    // SAFETY: m is open.
                    let s = unsafe { conc_mmap_readline(m, &mut l, &mut n) };
                    if s != CONC_OK || n == 0 {
                        return s;
                    }
                }
            }),
            ("read_byte", |m| {
                let mut b = 0;
                loop {
                    // SAFETY: m is open.
                    let s = unsafe { conc_mmap_read_byte(m, &mut b) };
                    if s != CONC_OK {
                        return s;
                    }
                }
            }),
            ("read", |m| {
                let mut buf = vec![0u8; 5 * 4096];
                let mut got = 0;
                // SAFETY: m is open; buf is large enough.
                unsafe { conc_mmap_read(m, buf.as_mut_ptr().cast(), buf.len(), &mut got) }
            }),
            ("find", |m| {
                let mut p = 0;
                // SAFETY: m is open.
                unsafe { conc_mmap_find(m, b"q".as_ptr().cast(), 1, 0, &mut p) }
            }),
            ("rfind", |m| {
                let mut p = 0;
                // SAFETY: m is open.
                unsafe { conc_mmap_rfind(m, b"x".as_ptr().cast(), 1, 0, &mut p) }
            }),
            ("count_lines", |m| {
                let mut n = 0;
                // SAFETY: m is open.
                unsafe { conc_mmap_count_lines(m, &mut n) }
            }),
            ("write", |m| {
                let buf = vec![b'w'; 4 * 4096];
                // SAFETY: m is open.
                unsafe { conc_mmap_write(m, buf.as_ptr().cast(), buf.len()) }
            }),
            ("write_byte", |m| loop {
                // SAFETY: m is open.
                let s = unsafe { conc_mmap_write_byte(m, b'b') };
                if s != CONC_OK {
                    return s;
                }
            }),
            ("move", |m| {
                // SAFETY: m is open.
                unsafe { conc_mmap_move(m, 0, 1, conc_mmap_len(m) - 1) }
            }),
        ];
        for (name, call) in calls {
            let f = TempFile::new(&content);
            let access = if name.starts_with("write") || name == "move" {
                1
            } else {
                0
            };
            let (s, map) = open(&f.0, access);
            assert_eq!(s, CONC_OK);
            std::fs::OpenOptions::new()
                .write(true)
                .open(f.path())
                .unwrap()
                .set_len(page as u64 + 10)
                .unwrap();
            assert_eq!(call(map), CONC_ERR_IO, "{name}");
            let msg = last_error_message();
            assert!(msg.contains("shrank under the map"), "{name}: {msg}");
            // Damaged from now on: every accessor says so.
            let mut b = 0;
            // SAFETY: map is open.
            unsafe {
                assert_eq!(conc_mmap_seek(map, 0, RawWhence(0)), CONC_OK);
                assert_eq!(conc_mmap_read_byte(map, &mut b), CONC_ERR_IO, "{name}");
                let want = if access == 0 {
                    CONC_ERR_INVALID_STATE
                } else {
                    CONC_ERR_IO
                };
                assert_eq!(conc_mmap_resize(map, 1), want, "{name}");
            }
            // The first lost page (which every call reached) reads as zeros
            // (unless the call wrote to it).
            if access == 0 {
                // SAFETY: map is open; that page was repaired.
                assert_eq!(unsafe { *conc_mmap_data(map).add(2 * page) }, 0, "{name}");
            }
            close(map);
        }
        assert!(crate::sigbus::installed());
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
