//! Shared memory and list names from fuzzer bytes: create, open and
//! unlink_name must accept exactly the names the rules of API.md allow
//! (an optional leading '/', then 1 to 30 letters, digits, '_', '-' or
//! '.', not "." or ".."), and refuse every other with
//! CONC_ERR_INVALID_ARGUMENT, creating nothing. Every segment made is
//! unlinked.

#![no_main]

use std::ffi::{CStr, CString};
use std::ptr;

use conc::error::{conc_status, CONC_ERR_ALREADY_EXISTS, CONC_ERR_INVALID_ARGUMENT, CONC_OK};
use conc::list::*;
use conc::shm::*;
use libfuzzer_sys::fuzz_target;

/// The rules, written out independently of the library's check.
fn valid(name: &[u8]) -> bool {
    let body = match name.first() {
        Some(b'/') => &name[1..],
        _ => name,
    };
    (1..=30).contains(&body.len())
        && body
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-' || *b == b'.')
        && body != b"."
        && body != b".."
}

/// The lock conc's C tests hold exclusively while they compare /dev/shm
/// before and after (tests/c/shm_snapshot.h): held shared for each input,
/// so that fuzzing beside `make test` does not disturb it.
fn dev_shm_lock() -> &'static std::fs::File {
    static LOCK: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    LOCK.get_or_init(|| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open("/tmp/conc-dev-shm-tests.lock")
            .expect("open the /dev/shm test lock")
    })
}

struct Shared(i32);

impl Shared {
    fn take() -> Shared {
        use std::os::fd::AsRawFd;
        let fd = dev_shm_lock().as_raw_fd();
        // SAFETY: a valid open descriptor.
        assert_eq!(unsafe { libc::flock(fd, libc::LOCK_SH) }, 0);
        Shared(fd)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: a valid open descriptor.
        unsafe { libc::flock(self.0, libc::LOCK_UN) };
    }
}

fn exists(body: &[u8]) -> bool {
    std::path::Path::new("/dev/shm")
        .join(String::from_utf8_lossy(body).as_ref())
        .exists()
}

fuzz_target!(|data: &[u8]| {
    let _shared = Shared::take();
    let (as_list, name) = match data.split_first() {
        Some((first, rest)) => (first & 1 == 1, rest),
        None => (false, data),
    };
    // A C string stops at the first NUL.
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    let cname = CString::new(name).expect("no NUL");
    let ok = valid(name);
    let body = name.strip_prefix(b"/").unwrap_or(name);
    if ok && exists(body) {
        return; // someone else's segment: leave it alone
    }
    let status: conc_status;
    if as_list {
        let mut list = 1 as *mut conc_list;
        // SAFETY: out is a local, the name a C string.
        status = unsafe { conc_list_create(&mut list, cname.as_ptr(), RawType(0), 2) };
        if status == CONC_OK {
            // SAFETY: a live handle; its name is a C string it owns.
            let got = unsafe { CStr::from_ptr(conc_list_name(list)) };
            assert_eq!(got.to_bytes(), body);
            // SAFETY: a live handle, closed once.
            unsafe {
                assert_eq!(conc_list_unlink(list), CONC_OK);
                assert_eq!(conc_list_close(list), CONC_OK);
            }
        } else {
            assert!(list.is_null());
        }
    } else {
        let mut shm = 1 as *mut conc_shm;
        // SAFETY: out is a local, the name a C string.
        status = unsafe { conc_shm_create(&mut shm, cname.as_ptr(), 16) };
        if status == CONC_OK {
            // SAFETY: a live handle; its name is a C string it owns.
            let got = unsafe { CStr::from_ptr(conc_shm_name(shm)) };
            assert_eq!(got.to_bytes(), body);
            let mut again = ptr::null_mut();
            // SAFETY: out is a local, the name a C string; live handles
            // closed once.
            unsafe {
                assert_eq!(conc_shm_open(&mut again, cname.as_ptr()), CONC_OK);
                assert_eq!(conc_shm_close(again), CONC_OK);
                assert_eq!(conc_shm_unlink_name(cname.as_ptr()), CONC_OK);
                assert_eq!(conc_shm_close(shm), CONC_OK);
            }
        } else {
            assert!(shm.is_null());
        }
    }
    if ok {
        // Valid and free: created, unless another process took the name
        // in between.
        assert!(
            status == CONC_OK || status == CONC_ERR_ALREADY_EXISTS,
            "{:?} refused with {:?}: {}",
            String::from_utf8_lossy(name),
            status,
            conc::error::last_error_message()
        );
    } else {
        assert_eq!(
            status,
            CONC_ERR_INVALID_ARGUMENT,
            "{:?} accepted",
            String::from_utf8_lossy(name)
        );
        let mut shm = 1 as *mut conc_shm;
        // SAFETY: out is a local, the name a C string.
        unsafe {
            assert_eq!(
                conc_shm_open(&mut shm, cname.as_ptr()),
                CONC_ERR_INVALID_ARGUMENT
            );
            assert!(shm.is_null());
            assert_eq!(
                conc_shm_unlink_name(cname.as_ptr()),
                CONC_ERR_INVALID_ARGUMENT
            );
        }
    }
});
