//! Sequences of readline, read_byte, seek and tell on a map of fuzzer
//! bytes (a whole file, a range of one at any offset, or an anonymous
//! map), checked against a model cursor after every step.

#![no_main]

mod common;

use std::ptr;

use conc::error::{conc_status, CONC_ERR_INVALID_ARGUMENT, CONC_ERR_OUT_OF_RANGE, CONC_OK};
use conc::mmap::*;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Readline,
    ReadByte,
    Seek(i64, u8),
    Tell,
    CountLines,
}

#[derive(Arbitrary, Debug)]
enum Source {
    File,
    Anonymous,
    Range(u16, u16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    data: Vec<u8>,
    source: Source,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let Input { data, source, ops } = input;
    let (map, want): (common::Map, &[u8]) = match source {
        Source::File => (common::map_of(&data, false), &data),
        Source::Anonymous => (common::map_of(&data, true), &data),
        Source::Range(offset, length) => {
            let offset = usize::from(offset) % (data.len() + 1);
            let length = usize::from(length) % (data.len() - offset + 1);
            let file = common::MemFile::new(&data);
            let mut m = ptr::null_mut();
            // SAFETY: out is a local, the path a C string.
            let s = unsafe {
                conc_mmap_open_range(
                    &mut m,
                    file.path.as_ptr(),
                    RawAccess(CONC_ACCESS_READ as u32),
                    offset as u64,
                    length,
                )
            };
            assert_eq!(s, CONC_OK, "{}", conc::error::last_error_message());
            let end = if length == 0 {
                data.len()
            } else {
                offset + length
            };
            (common::Map(m), &data[offset..end])
        }
    };
    let m = map.0;
    let len = want.len();
    // SAFETY: an open map.
    assert_eq!(unsafe { conc_mmap_len(m) }, len);
    // SAFETY: an open map.
    let base = unsafe { conc_mmap_data(m) };
    assert!(!base.is_null());
    if len > 0 {
        // SAFETY: valid for len bytes.
        assert_eq!(unsafe { std::slice::from_raw_parts(base, len) }, want);
    }
    let mut cursor = 0usize;
    for op in ops {
        match op {
            Op::Readline => {
                let mut line = ptr::null();
                let mut n = usize::MAX;
                // SAFETY: an open map; locals.
                let s = unsafe { conc_mmap_readline(m, &mut line, &mut n) };
                assert_eq!(s, CONC_OK);
                assert_eq!(line as usize - base as usize, cursor);
                let expect = want[cursor..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(len - cursor, |i| i + 1);
                assert_eq!(n, expect);
                cursor += n;
            }
            Op::ReadByte => {
                let mut b = 0xa5u8;
                // SAFETY: an open map; a local.
                let s = unsafe { conc_mmap_read_byte(m, &mut b) };
                if cursor == len {
                    assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
                    assert_eq!(b, 0xa5);
                } else {
                    assert_eq!(s, CONC_OK);
                    assert_eq!(b, want[cursor]);
                    cursor += 1;
                }
            }
            Op::Seek(offset, whence) => {
                let whence = u32::from(whence % 5);
                // SAFETY: an open map.
                let s: conc_status = unsafe { conc_mmap_seek(m, offset, RawWhence(whence)) };
                let from = match whence {
                    0 => Some(0i128),
                    1 => Some(cursor as i128),
                    2 => Some(len as i128),
                    _ => None,
                };
                match from {
                    None => assert_eq!(s, CONC_ERR_INVALID_ARGUMENT),
                    Some(from) => {
                        let to = from + i128::from(offset);
                        if (0..=len as i128).contains(&to) {
                            assert_eq!(s, CONC_OK);
                            cursor = to as usize;
                        } else {
                            assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
                        }
                    }
                }
            }
            Op::Tell => {}
            Op::CountLines => {
                let mut n = u64::MAX;
                // SAFETY: an open map; a local.
                assert_eq!(unsafe { conc_mmap_count_lines(m, &mut n) }, CONC_OK);
                assert_eq!(n, common::naive_count(want));
            }
        }
        // SAFETY: an open map.
        assert_eq!(unsafe { conc_mmap_tell(m) }, cursor as u64);
    }
});
