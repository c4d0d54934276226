//! Sequences of read, write, write_byte, move, seek, resize and advise on
//! a writable map of fuzzer bytes (a whole file mapped CONC_ACCESS_WRITE or
//! CONC_ACCESS_COPY, or an anonymous map), checked against a `Vec<u8>`
//! model after every step: statuses, results, the cursor and every byte.

#![no_main]

mod common;

use std::ptr;

use conc::error::{
    conc_status, CONC_ERR_INVALID_ARGUMENT, CONC_ERR_INVALID_STATE, CONC_ERR_OUT_OF_RANGE,
    CONC_OK,
};
use conc::mmap::*;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Edit {
    Read(u16),
    Write(Vec<u8>),
    WriteByte(u8),
    Move(u64, u64, u16),
    Seek(u64),
    Resize(u16),
    Advise(u8, u64, u16),
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Write,
    Copy,
    Anonymous,
}

#[derive(Arbitrary, Debug)]
struct Input {
    data: Vec<u8>,
    kind: Kind,
    edits: Vec<Edit>,
}

fuzz_target!(|input: Input| {
    let Input { data, kind, edits } = input;
    let file = common::MemFile::new(&data);
    let (map, resizable) = match kind {
        Kind::Anonymous if !data.is_empty() => (common::map_of(&data, true), true),
        Kind::Write | Kind::Copy | Kind::Anonymous => {
            let access = if matches!(kind, Kind::Copy) {
                CONC_ACCESS_COPY
            } else {
                CONC_ACCESS_WRITE
            };
            let mut m = ptr::null_mut();
            // SAFETY: out is a local, the path a C string.
            let s = unsafe { conc_mmap_open(&mut m, file.path.as_ptr(), RawAccess(access as u32)) };
            assert_eq!(s, CONC_OK, "{}", conc::error::last_error_message());
            (common::Map(m), access == CONC_ACCESS_WRITE)
        }
    };
    let m = map.0;
    let mut model = data;
    let mut cursor = 0usize;
    for edit in edits {
        let len = model.len();
        match edit {
            Edit::Read(n) => {
                let n = usize::from(n);
                let mut buf = vec![0u8; n];
                let mut got = usize::MAX;
                // SAFETY: an open map; buf holds n bytes.
                let s = unsafe { conc_mmap_read(m, buf.as_mut_ptr().cast(), n, &mut got) };
                assert_eq!(s, CONC_OK);
                let want = n.min(len - cursor);
                assert_eq!(got, want);
                assert_eq!(&buf[..want], &model[cursor..cursor + want]);
                cursor += want;
            }
            Edit::Write(bytes) => {
                // SAFETY: an open map; bytes is readable.
                let s = unsafe { conc_mmap_write(m, bytes.as_ptr().cast(), bytes.len()) };
                if bytes.len() <= len - cursor {
                    assert_eq!(s, CONC_OK);
                    model[cursor..cursor + bytes.len()].copy_from_slice(&bytes);
                    cursor += bytes.len();
                } else {
                    assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
                }
            }
            Edit::WriteByte(b) => {
                // SAFETY: an open map.
                let s = unsafe { conc_mmap_write_byte(m, b) };
                if cursor < len {
                    assert_eq!(s, CONC_OK);
                    model[cursor] = b;
                    cursor += 1;
                } else {
                    assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
                }
            }
            Edit::Move(dest, src, n) => {
                let n = usize::from(n);
                // SAFETY: an open map.
                let s = unsafe { conc_mmap_move(m, dest, src, n) };
                let fits = |at: u64| at <= len as u64 && n as u64 <= len as u64 - at;
                if fits(dest) && fits(src) {
                    assert_eq!(s, CONC_OK);
                    model.copy_within(src as usize..src as usize + n, dest as usize);
                } else {
                    assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
                }
            }
            Edit::Seek(to) => {
                // SAFETY: an open map.
                let s: conc_status = unsafe { conc_mmap_seek(m, to as i64, RawWhence(0)) };
                if to <= len as u64 {
                    assert_eq!(s, CONC_OK);
                    cursor = to as usize;
                } else {
                    assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
                }
            }
            Edit::Resize(n) => {
                let n = usize::from(n);
                // SAFETY: an open map, used by this thread only.
                let s = unsafe { conc_mmap_resize(m, n) };
                if resizable {
                    assert_eq!(s, CONC_OK, "{}", conc::error::last_error_message());
                    model.resize(n, 0);
                    cursor = cursor.min(n);
                } else {
                    assert_eq!(s, CONC_ERR_INVALID_STATE);
                }
            }
            Edit::Advise(advice, offset, length) => {
                let length = usize::from(length);
                // DONTNEED would drop a COPY map's changes: the model
                // cannot follow that, so only the other hints here.
                let advice = u32::from(advice % 6);
                let advice = if advice == 4 { 7 } else { advice };
                // SAFETY: an open map.
                let s = unsafe { conc_mmap_advise(m, RawAdvice(advice), offset, length) };
                if advice > 4 {
                    assert_eq!(s, CONC_ERR_INVALID_ARGUMENT);
                } else if offset <= len as u64 && length as u64 <= len as u64 - offset {
                    assert_eq!(s, CONC_OK);
                } else {
                    assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
                }
            }
        }
        // SAFETY: an open map.
        assert_eq!(unsafe { conc_mmap_tell(m) }, cursor as u64);
        // SAFETY: an open map.
        assert_eq!(unsafe { conc_mmap_len(m) }, model.len());
        if !model.is_empty() {
            // SAFETY: data is valid for len bytes.
            let bytes = unsafe { std::slice::from_raw_parts(conc_mmap_data(m), model.len()) };
            assert_eq!(bytes, &model[..]);
        }
    }
});
