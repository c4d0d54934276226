//! count_lines on a map of fuzzer bytes, and the split of the count over
//! any number of threads, against the naive count.

#![no_main]

mod common;

use conc::error::CONC_OK;
use conc::mmap::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u8>, u8, bool)| {
    let (data, threads, anonymous) = input;
    let want = common::naive_count(&data);
    let map = common::map_of(&data, anonymous);
    let mut n = u64::MAX;
    // SAFETY: an open map; a local.
    assert_eq!(unsafe { conc_mmap_count_lines(map.0, &mut n) }, CONC_OK);
    assert_eq!(n, want);
    let threads = usize::from(threads % 9);
    assert_eq!(count_lines_split(&data, threads), want);
});
