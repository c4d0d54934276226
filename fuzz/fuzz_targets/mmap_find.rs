//! find and rfind on a map of fuzzer bytes, for fuzzer needles and start
//! offsets, against the naive search.

#![no_main]

mod common;

use std::ptr;

use conc::error::CONC_OK;
use conc::mmap::*;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    data: Vec<u8>,
    needle: Vec<u8>,
    /// Also search for data[at..at + n], which is sure to match.
    taken: (u16, u8),
    starts: Vec<u64>,
    anonymous: bool,
}

fn search(map: &common::Map, needle: &[u8], start: u64, reverse: bool) -> i64 {
    let f = if reverse {
        conc_mmap_rfind
    } else {
        conc_mmap_find
    };
    let p = if needle.is_empty() {
        ptr::null()
    } else {
        needle.as_ptr().cast()
    };
    let mut pos = i64::MIN;
    // SAFETY: an open map; needle readable for its length; a local.
    assert_eq!(
        unsafe { f(map.0, p, needle.len(), start, &mut pos) },
        CONC_OK
    );
    pos
}

fuzz_target!(|input: Input| {
    let Input {
        data,
        needle,
        taken,
        mut starts,
        anonymous,
    } = input;
    let map = common::map_of(&data, anonymous);
    let mut needles = vec![needle];
    if !data.is_empty() {
        let at = usize::from(taken.0) % data.len();
        let n = usize::from(taken.1) % (data.len() - at + 1);
        needles.push(data[at..at + n].to_vec());
    }
    starts.truncate(16);
    starts.extend([0, data.len() as u64, data.len() as u64 + 1]);
    for needle in &needles {
        for &start in &starts {
            assert_eq!(
                search(&map, needle, start, false),
                common::naive_find(&data, needle, start),
                "find({needle:?}, {start})"
            );
            assert_eq!(
                search(&map, needle, start, true),
                common::naive_rfind(&data, needle, start),
                "rfind({needle:?}, {start})"
            );
        }
    }
    // Searching never moves the cursor.
    // SAFETY: an open map.
    assert_eq!(unsafe { conc_mmap_tell(map.0) }, 0);
});
