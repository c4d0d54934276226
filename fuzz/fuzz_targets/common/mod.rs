//! What the fuzz targets share: maps of fuzzer bytes (anonymous, or of a
//! file in memory reached by path), closed on drop, and the naive
//! reference implementations the library is checked against.

#![allow(dead_code)] // each target uses its own part

use std::ffi::CString;
use std::ptr;

use conc::error::CONC_OK;
use conc::mmap::*;

/// An open map, closed when dropped.
pub struct Map(pub *mut conc_mmap);

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the map came from a conc open function and is closed once.
        assert_eq!(unsafe { conc_mmap_close(self.0) }, CONC_OK);
    }
}

/// An in-memory file holding some bytes, opened by path as users would
/// (`/proc/self/fd/N` of a memfd: no disk involved).
pub struct MemFile {
    fd: i32,
    pub path: CString,
}

impl MemFile {
    pub fn new(bytes: &[u8]) -> MemFile {
        // SAFETY: a NUL-terminated name and no flags.
        let fd = unsafe { libc::memfd_create(c"conc-fuzz".as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create");
        let mut done = 0;
        while done < bytes.len() {
            // SAFETY: the rest of `bytes` is readable.
            let n = unsafe { libc::write(fd, bytes[done..].as_ptr().cast(), bytes.len() - done) };
            assert!(n > 0, "write");
            done += n as usize;
        }
        let path = CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL");
        MemFile { fd, path }
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// A map holding `bytes`: an anonymous map when `anonymous` (and there is
/// at least one byte), else a map of a file.
pub fn map_of(bytes: &[u8], anonymous: bool) -> Map {
    let mut m = ptr::null_mut();
    if anonymous && !bytes.is_empty() {
        // SAFETY: out is a local.
        assert_eq!(unsafe { conc_mmap_anonymous(&mut m, bytes.len()) }, CONC_OK);
        // SAFETY: an anonymous map is writable for its length.
        let data = unsafe { conc_mmap_data_mut(m) };
        // SAFETY: `data` is valid for bytes.len() bytes, no overlap.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len()) };
    } else {
        let file = MemFile::new(bytes);
        // SAFETY: out is a local, the path a C string.
        let s = unsafe {
            conc_mmap_open(
                &mut m,
                file.path.as_ptr(),
                RawAccess(CONC_ACCESS_READ as u32),
            )
        };
        assert_eq!(s, CONC_OK, "{}", conc::error::last_error_message());
    }
    Map(m)
}

/// The number of lines a readline loop returns.
pub fn naive_count(data: &[u8]) -> u64 {
    let nl = data.iter().filter(|&&b| b == b'\n').count() as u64;
    nl + u64::from(data.last().is_some_and(|&b| b != b'\n'))
}

/// Python's `find(sub, start)`.
pub fn naive_find(hay: &[u8], needle: &[u8], start: u64) -> i64 {
    if start > hay.len() as u64 {
        return -1;
    }
    (start as usize..=hay.len())
        .find(|&i| hay[i..].starts_with(needle))
        .map_or(-1, |i| i as i64)
}

/// Python's `rfind(sub, start)`, except that an empty needle matches at
/// `start`, as conc documents.
pub fn naive_rfind(hay: &[u8], needle: &[u8], start: u64) -> i64 {
    if start > hay.len() as u64 {
        return -1;
    }
    if needle.is_empty() {
        return start as i64;
    }
    (start as usize..=hay.len())
        .rev()
        .find(|&i| hay[i..].starts_with(needle))
        .map_or(-1, |i| i as i64)
}
