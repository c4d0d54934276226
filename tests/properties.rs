//! Property tests of the C API through the rlib: the extern "C" functions
//! are called as C would call them, on arbitrary bytes, offsets, needles
//! and names, and checked against naive reference implementations.
//!
//! - readline loops, read_byte/seek/tell sequences, find, rfind and
//!   count_lines on maps of files written to a temporary directory (whole
//!   files and ranges) and on anonymous maps;
//! - the split of count_lines over threads, on small data with any
//!   number of threads, and on maps large enough for the threaded path;
//! - shared memory and list names against the rules of API.md: valid
//!   names create, open and unlink fine (with or without the leading
//!   `/`), invalid ones give `CONC_ERR_INVALID_ARGUMENT` everywhere.
//!
//! Case counts are kept so that the whole file runs in a few seconds.

use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use conc::error::{
    conc_status, CONC_ERR_INVALID_ARGUMENT, CONC_ERR_NOT_FOUND, CONC_ERR_OUT_OF_RANGE, CONC_OK,
};
use conc::list::*;
use conc::mmap::*;
use conc::shm::*;
use proptest::prelude::*;

/// A map that is closed when dropped.
struct Map(*mut conc_mmap);

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the map came from a conc open function and is closed once.
        assert_eq!(unsafe { conc_mmap_close(self.0) }, CONC_OK);
    }
}

impl Map {
    fn len(&self) -> usize {
        // SAFETY: an open map.
        unsafe { conc_mmap_len(self.0) }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: an open map: data is valid for len bytes (not read when 0).
        let data = unsafe { conc_mmap_data(self.0) };
        assert!(!data.is_null());
        if self.len() == 0 {
            return &[];
        }
        // SAFETY: see above.
        unsafe { std::slice::from_raw_parts(data, self.len()) }
    }

    fn tell(&self) -> u64 {
        // SAFETY: an open map.
        unsafe { conc_mmap_tell(self.0) }
    }

    fn readline(&self) -> (conc_status, usize, usize) {
        let mut line = ptr::null();
        let mut len = usize::MAX;
        // SAFETY: an open map; line and len are locals.
        let s = unsafe { conc_mmap_readline(self.0, &mut line, &mut len) };
        // SAFETY: an open map.
        let data = unsafe { conc_mmap_data(self.0) };
        (s, (line as usize).wrapping_sub(data as usize), len)
    }

    fn count_lines(&self) -> u64 {
        let mut n = u64::MAX;
        // SAFETY: an open map; n is a local.
        assert_eq!(unsafe { conc_mmap_count_lines(self.0, &mut n) }, CONC_OK);
        n
    }

    fn find(&self, needle: &[u8], start: u64, reverse: bool) -> i64 {
        let mut pos = i64::MIN;
        let f = if reverse {
            conc_mmap_rfind
        } else {
            conc_mmap_find
        };
        // An empty needle is passed as NULL, which the API allows.
        let p = if needle.is_empty() {
            ptr::null()
        } else {
            needle.as_ptr().cast()
        };
        // SAFETY: an open map; needle is valid for its length; pos a local.
        assert_eq!(
            unsafe { f(self.0, p, needle.len(), start, &mut pos) },
            CONC_OK
        );
        pos
    }
}

/// A file with `bytes`, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(bytes: &[u8]) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "conc_properties_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).expect("write the temporary file");
        TempFile(path)
    }

    fn c_path(&self) -> CString {
        CString::new(self.0.to_str().expect("UTF-8 path")).expect("no NUL")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn open_file(file: &TempFile, access: u32) -> Map {
    let mut m = ptr::null_mut();
    let path = file.c_path();
    // SAFETY: out is a local, path a C string.
    let s = unsafe { conc_mmap_open(&mut m, path.as_ptr(), RawAccess(access)) };
    assert_eq!(s, CONC_OK, "{}", conc::error::last_error_message());
    Map(m)
}

fn open_range(file: &TempFile, offset: u64, length: usize) -> Map {
    let mut m = ptr::null_mut();
    let path = file.c_path();
    // SAFETY: out is a local, path a C string.
    let s = unsafe {
        conc_mmap_open_range(
            &mut m,
            path.as_ptr(),
            RawAccess(CONC_ACCESS_READ as u32),
            offset,
            length,
        )
    };
    assert_eq!(s, CONC_OK, "{}", conc::error::last_error_message());
    Map(m)
}

/// An anonymous map holding `bytes` (at least one byte: length 0 is refused).
fn anonymous(bytes: &[u8]) -> Map {
    let mut m = ptr::null_mut();
    // SAFETY: out is a local.
    assert_eq!(unsafe { conc_mmap_anonymous(&mut m, bytes.len()) }, CONC_OK);
    let map = Map(m);
    // SAFETY: an anonymous map is writable for its length.
    let data = unsafe { conc_mmap_data_mut(map.0) };
    // SAFETY: data is valid for bytes.len() bytes and does not overlap.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len()) };
    map
}

// ---- the reference implementations -------------------------------------

/// The lines a readline loop returns: (offset, length) of each.
fn naive_lines(data: &[u8]) -> Vec<(usize, usize)> {
    let mut lines = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let end = data[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| at + i + 1);
        lines.push((at, end - at));
        at = end;
    }
    lines
}

fn naive_find(hay: &[u8], needle: &[u8], start: u64) -> i64 {
    if start > hay.len() as u64 {
        return -1;
    }
    let start = start as usize;
    (start..=hay.len())
        .find(|&i| hay[i..].starts_with(needle))
        .map_or(-1, |i| i as i64)
}

fn naive_rfind(hay: &[u8], needle: &[u8], start: u64) -> i64 {
    if start > hay.len() as u64 {
        return -1;
    }
    if needle.is_empty() {
        return start as i64; // the documented difference from Python
    }
    let start = start as usize;
    (start..=hay.len())
        .rev()
        .find(|&i| hay[i..].starts_with(needle))
        .map_or(-1, |i| i as i64)
}

fn naive_count(data: &[u8]) -> u64 {
    let nl = data.iter().filter(|&&b| b == b'\n').count() as u64;
    nl + u64::from(data.last().is_some_and(|&b| b != b'\n'))
}

// ---- strategies ---------------------------------------------------------

/// Bytes with many newlines and repeated letters, so lines are short and
/// needles match, plus any byte at all: up to `segments` short pieces,
/// each repeated a few times (generating byte by byte is slow).
fn text(segments: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => Just(b'\n'),
        4 => b'a'..=b'c',
        1 => any::<u8>(),
    ];
    prop::collection::vec((prop::collection::vec(byte, 1..4), 1usize..12), 0..segments).prop_map(
        |pieces| {
            pieces
                .iter()
                .flat_map(|(piece, times)| piece.iter().copied().cycle().take(piece.len() * times))
                .collect()
        },
    )
}

fn needle() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(b'\n'), b'a'..=b'c'], 0..5)
}

#[derive(Debug, Clone)]
enum Op {
    Readline,
    ReadByte,
    Seek(i64, u32),
    Tell,
    CountLines,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => Just(Op::Readline),
            2 => Just(Op::ReadByte),
            // Small offsets from each whence, a few huge ones, and whence
            // values past the enum (refused).
            3 => (-40i64..40, 0u32..4).prop_map(|(o, w)| Op::Seek(o, w)),
            1 => (prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(-1i64 << 40)], 0u32..3)
                .prop_map(|(o, w)| Op::Seek(o, w)),
            1 => Just(Op::Tell),
            1 => Just(Op::CountLines),
        ],
        0..60,
    )
}

/// Runs `ops` on `map` (whose bytes are `data`) against a model cursor.
fn check_ops(map: &Map, data: &[u8], ops: &[Op]) -> Result<(), TestCaseError> {
    let len = data.len();
    let mut cursor = 0usize;
    prop_assert_eq!(map.tell(), 0);
    for op in ops {
        match *op {
            Op::Readline => {
                let (s, at, n) = map.readline();
                prop_assert_eq!(s, CONC_OK);
                prop_assert_eq!(at, cursor);
                let want = data[cursor..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(len - cursor, |i| i + 1);
                prop_assert_eq!(n, want);
                cursor += n;
            }
            Op::ReadByte => {
                let mut b = 0xa5u8;
                // SAFETY: an open map; b is a local.
                let s = unsafe { conc_mmap_read_byte(map.0, &mut b) };
                if cursor == len {
                    prop_assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
                    prop_assert_eq!(b, 0xa5);
                } else {
                    prop_assert_eq!(s, CONC_OK);
                    prop_assert_eq!(b, data[cursor]);
                    cursor += 1;
                }
            }
            Op::Seek(offset, whence) => {
                // SAFETY: an open map.
                let s = unsafe { conc_mmap_seek(map.0, offset, RawWhence(whence)) };
                let base = match whence {
                    0 => Some(0i128),
                    1 => Some(cursor as i128),
                    2 => Some(len as i128),
                    _ => None,
                };
                match base {
                    None => prop_assert_eq!(s, CONC_ERR_INVALID_ARGUMENT),
                    Some(base) => {
                        let to = base + i128::from(offset);
                        if (0..=len as i128).contains(&to) {
                            prop_assert_eq!(s, CONC_OK);
                            cursor = to as usize;
                        } else {
                            prop_assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
                        }
                    }
                }
            }
            Op::Tell => {}
            Op::CountLines => prop_assert_eq!(map.count_lines(), naive_count(data)),
        }
        prop_assert_eq!(map.tell(), cursor as u64);
    }
    Ok(())
}

fn check_readline_loop(map: &Map, data: &[u8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(map.bytes(), data);
    let mut got = Vec::new();
    loop {
        let (s, at, n) = map.readline();
        prop_assert_eq!(s, CONC_OK);
        if n == 0 {
            prop_assert_eq!(at, data.len());
            break;
        }
        got.push((at, n));
        prop_assert!(got.len() <= data.len(), "the loop does not end");
    }
    let want = naive_lines(data);
    prop_assert_eq!(&got, &want);
    // At the end it stays at the end.
    prop_assert_eq!(map.readline(), (CONC_OK, data.len(), 0));
    prop_assert_eq!(map.count_lines(), want.len() as u64);
    prop_assert_eq!(map.tell(), data.len() as u64);
    Ok(())
}

// ---- read, write, write_byte, move and resize against a Vec<u8> ---------

#[derive(Debug, Clone)]
enum Edit {
    Read(usize),
    Write(Vec<u8>),
    WriteByte(u8),
    Move(u64, u64, usize),
    Seek(u64),
    Resize(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0usize..80).prop_map(Edit::Read),
            3 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Edit::Write),
            2 => any::<u8>().prop_map(Edit::WriteByte),
            3 => (0u64..140, 0u64..140, 0usize..80).prop_map(|(d, s, n)| Edit::Move(d, s, n)),
            1 => (prop_oneof![Just(u64::MAX), Just(u64::MAX - 3)], 0u64..10, 0usize..3)
                .prop_map(|(d, s, n)| Edit::Move(d, s, n)),
            2 => (0u64..140).prop_map(Edit::Seek),
            1 => (0usize..9000).prop_map(Edit::Resize),
        ],
        0..40,
    )
}

/// Runs `edits` on `map` (a writable map holding `model`) and on the model,
/// comparing statuses, results, the cursor and every byte after each step.
/// `resizable`: whether resize is allowed (else INVALID_STATE).
fn check_edits(
    map: &Map,
    mut model: Vec<u8>,
    edits: &[Edit],
    resizable: bool,
) -> Result<Vec<u8>, TestCaseError> {
    let mut cursor = 0usize;
    for edit in edits {
        let len = model.len();
        match edit {
            Edit::Read(n) => {
                let mut buf = vec![0x5au8; *n];
                let mut got = usize::MAX;
                // SAFETY: an open map; buf holds n bytes.
                let s = unsafe { conc_mmap_read(map.0, buf.as_mut_ptr().cast(), *n, &mut got) };
                prop_assert_eq!(s, CONC_OK);
                let want = (*n).min(len - cursor);
                prop_assert_eq!(got, want);
                prop_assert_eq!(&buf[..want], &model[cursor..cursor + want]);
                cursor += want;
            }
            Edit::Write(bytes) => {
                // SAFETY: an open map; bytes is readable.
                let s = unsafe { conc_mmap_write(map.0, bytes.as_ptr().cast(), bytes.len()) };
                if bytes.len() <= len - cursor {
                    prop_assert_eq!(s, CONC_OK);
                    model[cursor..cursor + bytes.len()].copy_from_slice(bytes);
                    cursor += bytes.len();
                } else {
                    prop_assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
                }
            }
            Edit::WriteByte(b) => {
                // SAFETY: an open map.
                let s = unsafe { conc_mmap_write_byte(map.0, *b) };
                if cursor < len {
                    prop_assert_eq!(s, CONC_OK);
                    model[cursor] = *b;
                    cursor += 1;
                } else {
                    prop_assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
                }
            }
            Edit::Move(dest, src, n) => {
                // SAFETY: an open map.
                let s = unsafe { conc_mmap_move(map.0, *dest, *src, *n) };
                let fits = |at: u64| at <= len as u64 && (*n as u64) <= len as u64 - at;
                if fits(*dest) && fits(*src) {
                    prop_assert_eq!(s, CONC_OK);
                    model.copy_within(*src as usize..*src as usize + n, *dest as usize);
                } else {
                    prop_assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
                }
            }
            Edit::Seek(to) => {
                // SAFETY: an open map.
                let s = unsafe { conc_mmap_seek(map.0, *to as i64, RawWhence(0)) };
                if *to as usize <= len {
                    prop_assert_eq!(s, CONC_OK);
                    cursor = *to as usize;
                } else {
                    prop_assert_eq!(s, CONC_ERR_OUT_OF_RANGE);
                }
            }
            Edit::Resize(n) => {
                // SAFETY: an open map, used by this thread only.
                let s = unsafe { conc_mmap_resize(map.0, *n) };
                if resizable {
                    prop_assert_eq!(s, CONC_OK);
                    model.resize(*n, 0);
                    cursor = cursor.min(*n);
                } else {
                    prop_assert_eq!(s, conc::error::CONC_ERR_INVALID_STATE);
                }
            }
        }
        prop_assert_eq!(map.tell(), cursor as u64);
        prop_assert_eq!(map.bytes(), &model[..]);
    }
    Ok(model)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn read_write_move_on_write_maps_follow_a_vec(data in prop::collection::vec(any::<u8>(), 0..120), edits in edits()) {
        let file = TempFile::new(&data);
        let model = {
            let map = open_file(&file, CONC_ACCESS_WRITE as u32);
            check_edits(&map, data, &edits, true)?
        };
        // A WRITE map's bytes are the file's, its size included.
        prop_assert_eq!(std::fs::read(&file.0).expect("read back"), model);
    }

    #[test]
    fn read_write_move_on_copy_maps_leave_the_file(data in prop::collection::vec(any::<u8>(), 0..120), edits in edits()) {
        let file = TempFile::new(&data);
        {
            let map = open_file(&file, CONC_ACCESS_COPY as u32);
            check_edits(&map, data.clone(), &edits, false)?;
        }
        prop_assert_eq!(std::fs::read(&file.0).expect("read back"), data);
    }

    #[test]
    fn read_write_move_on_anonymous_maps_follow_a_vec(data in prop::collection::vec(any::<u8>(), 1..120), edits in edits()) {
        let map = anonymous(&data);
        check_edits(&map, data, &edits, true)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn readline_loop_on_files(data in text(150), access in 0u32..3) {
        let file = TempFile::new(&data);
        let map = open_file(&file, access);
        check_readline_loop(&map, &data)?;
    }

    #[test]
    fn readline_loop_on_anonymous_maps(data in text(150)) {
        prop_assume!(!data.is_empty());
        let map = anonymous(&data);
        check_readline_loop(&map, &data)?;
    }

    #[test]
    fn readline_loop_on_ranges(data in text(400), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        // Any offset (not only page multiples), any length that fits; 0: to the end.
        let file = TempFile::new(&data);
        let offset = a.index(data.len() + 1);
        let length = b.index(data.len() - offset + 1);
        let map = open_range(&file, offset as u64, length);
        let want = if length == 0 { &data[offset..] } else { &data[offset..offset + length] };
        check_readline_loop(&map, want)?;
    }

    #[test]
    fn cursor_operations_follow_the_model(data in text(400), ops in ops(), anon in any::<bool>()) {
        if anon && !data.is_empty() {
            check_ops(&anonymous(&data), &data, &ops)?;
        } else {
            let file = TempFile::new(&data);
            check_ops(&open_file(&file, CONC_ACCESS_READ as u32), &data, &ops)?;
        }
    }

    #[test]
    fn find_and_rfind_match_the_naive_search(
        data in text(40),
        needles in prop::collection::vec(needle(), 1..8),
        taken in any::<(prop::sample::Index, prop::sample::Index)>(),
        starts in prop::collection::vec(0u64..700, 1..8),
        anon in any::<bool>(),
    ) {
        let file;
        let map = if anon && !data.is_empty() {
            anonymous(&data)
        } else {
            file = TempFile::new(&data);
            open_file(&file, CONC_ACCESS_READ as u32)
        };
        // Needles from the data itself match somewhere for sure.
        let mut needles = needles;
        if !data.is_empty() {
            let i = taken.0.index(data.len());
            let n = taken.1.index((data.len() - i).min(12) + 1);
            needles.push(data[i..i + n].to_vec());
        }
        let mut starts = starts;
        starts.extend([0, data.len() as u64, data.len() as u64 + 1, u64::MAX]);
        for needle in &needles {
            for &start in &starts {
                prop_assert_eq!(map.find(needle, start, false), naive_find(&data, needle, start),
                    "find({:?}, {})", needle, start);
                prop_assert_eq!(map.find(needle, start, true), naive_rfind(&data, needle, start),
                    "rfind({:?}, {})", needle, start);
            }
        }
        prop_assert_eq!(map.tell(), 0);
    }

    #[test]
    fn count_lines_split_over_any_number_of_threads(data in text(150), threads in 1usize..24) {
        prop_assert_eq!(count_lines_split(&data, threads), naive_count(&data));
    }
}

proptest! {
    // Maps past twice CONC_MMAP_COUNT_CHUNK take the threaded path: a few
    // cases, each a few MiB.
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn count_lines_on_maps_large_enough_for_threads(
        extra in 0usize..(3 * CONC_MMAP_COUNT_CHUNK),
        newlines in prop::collection::vec(any::<prop::sample::Index>(), 0..3000),
        ends_with_newline in any::<bool>(),
        anon in any::<bool>(),
    ) {
        let len = 2 * CONC_MMAP_COUNT_CHUNK + extra;
        let mut data = vec![b'x'; len];
        for n in &newlines {
            data[n.index(len)] = b'\n';
        }
        // Newlines right at the chunk boundaries the threads split at.
        for k in 1..8 {
            let at = len * k / 8;
            data[at - 1] = b'\n';
        }
        data[len - 1] = if ends_with_newline { b'\n' } else { b'y' };
        let want = naive_count(&data);
        if anon {
            prop_assert_eq!(anonymous(&data).count_lines(), want);
        } else {
            let file = TempFile::new(&data);
            prop_assert_eq!(open_file(&file, CONC_ACCESS_READ as u32).count_lines(), want);
        }
        for threads in [2, 3, 7] {
            prop_assert_eq!(count_lines_split(&data, threads), want);
        }
    }
}

// ---- shared memory and list names ---------------------------------------

/// The characters a name may have besides an optional leading `/`.
const NAME_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.";

/// Names are global to the machine: one name test at a time in this
/// process, so two cases never race for the same name.
static NAMES: Mutex<()> = Mutex::new(());

/// The lock the C test programs hold (exclusively) while they compare
/// /dev/shm before and after (tests/c/shm_snapshot.h); held shared while
/// a case has a segment, as the library's unit tests do.
fn dev_shm_lock() -> std::fs::File {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open("/tmp/conc-dev-shm-tests.lock")
        .expect("open the /dev/shm test lock");
    // SAFETY: a valid open descriptor.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH) }, 0);
    file
}

fn name_body(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(NAME_CHARS), len)
}

/// A valid name: an optional `/`, then 1 to 30 allowed characters, not
/// `.` or `..`. Returns (the name as given, the name without its `/`).
fn valid_name() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (any::<bool>(), name_body(1..=30))
        .prop_filter("not . or ..", |(_, b)| b != b"." && b != b"..")
        .prop_map(|(slash, body)| {
            let mut name = if slash { b"/".to_vec() } else { Vec::new() };
            name.extend_from_slice(&body);
            (name, body)
        })
}

/// An invalid name, each way a name can be wrong.
fn invalid_name() -> impl Strategy<Value = Vec<u8>> {
    let slash = || prop_oneof![Just(Vec::new()), Just(b"/".to_vec())];
    // Any byte but NUL that is not allowed ('/' included: only one, first).
    let bad_byte = (1u8..=255).prop_filter("not allowed", |b| !NAME_CHARS.contains(b));
    prop_oneof![
        slash(),
        (slash(), name_body(31..=60)).prop_map(|(mut s, b)| {
            s.extend(b);
            s
        }),
        (
            slash(),
            name_body(0..=29),
            bad_byte,
            any::<prop::sample::Index>()
        )
            .prop_map(|(mut s, mut b, bad, at)| {
                let at = at.index(b.len() + 1);
                b.insert(at, bad);
                s.extend(b);
                s
            }),
        (
            slash(),
            prop_oneof![Just(b".".to_vec()), Just(b"..".to_vec())]
        )
            .prop_map(|(mut s, b)| {
                s.extend(b);
                s
            }),
        name_body(1..=29).prop_map(|b| [b"//".as_slice(), &b].concat()),
    ]
}

fn exists_in_dev_shm(body: &[u8]) -> bool {
    std::path::Path::new("/dev/shm")
        .join(std::str::from_utf8(body).expect("ASCII"))
        .exists()
}

fn c_name(name: &[u8]) -> CString {
    CString::new(name).expect("no NUL in generated names")
}

/// The other spelling of a valid name: with the `/` if it had none, and
/// the other way round.
fn other_spelling(name: &[u8], body: &[u8]) -> CString {
    if name.first() == Some(&b'/') {
        c_name(body)
    } else {
        c_name(&[b"/".as_slice(), body].concat())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn valid_shm_names_create_open_and_unlink((name, body) in valid_name(), size in 1usize..10000) {
        let _one_at_a_time = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        let _shared = dev_shm_lock();
        prop_assume!(!exists_in_dev_shm(&body)); // someone else's segment
        let cname = c_name(&name);
        let mut shm = ptr::null_mut();
        // SAFETY: out is a local, the name a C string.
        let s = unsafe { conc_shm_create(&mut shm, cname.as_ptr(), size) };
        prop_assert_eq!(s, CONC_OK, "{}", conc::error::last_error_message());
        let result = (|| {
            // SAFETY: a live handle; the name is a C string it owns.
            let got = unsafe { CStr::from_ptr(conc_shm_name(shm)) };
            prop_assert_eq!(got.to_bytes(), body.as_slice());
            // SAFETY: a live handle.
            prop_assert_eq!(unsafe { conc_shm_size(shm) }, size);
            prop_assert!(exists_in_dev_shm(&body));
            // Attach by the other spelling, then unlink by it.
            let other = other_spelling(&name, &body);
            let mut again = ptr::null_mut();
            // SAFETY: out is a local, the name a C string.
            prop_assert_eq!(unsafe { conc_shm_open(&mut again, other.as_ptr()) }, CONC_OK);
            // SAFETY: a live handle.
            prop_assert_eq!(unsafe { conc_shm_size(again) }, size);
            // SAFETY: a live handle, closed once.
            prop_assert_eq!(unsafe { conc_shm_close(again) }, CONC_OK);
            // SAFETY: a C string.
            prop_assert_eq!(unsafe { conc_shm_unlink_name(other.as_ptr()) }, CONC_OK);
            prop_assert!(!exists_in_dev_shm(&body));
            let mut gone = ptr::null_mut();
            // SAFETY: out is a local, the name a C string.
            prop_assert_eq!(unsafe { conc_shm_open(&mut gone, cname.as_ptr()) }, CONC_ERR_NOT_FOUND);
            Ok(())
        })();
        // SAFETY: the name is a C string; the handle is live and closed once.
        unsafe {
            conc_shm_unlink_name(cname.as_ptr());
            prop_assert_eq!(conc_shm_close(shm), CONC_OK);
        }
        result?;
    }

    #[test]
    fn valid_list_names_create_open_and_unlink((name, body) in valid_name(), len in 1usize..500, f64s in any::<bool>()) {
        let _one_at_a_time = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        let _shared = dev_shm_lock();
        prop_assume!(!exists_in_dev_shm(&body));
        let cname = c_name(&name);
        let ty = if f64s { CONC_TYPE_F64 } else { CONC_TYPE_I64 };
        let mut list = ptr::null_mut();
        // SAFETY: out is a local, the name a C string.
        let s = unsafe { conc_list_create(&mut list, cname.as_ptr(), RawType(ty as u32), len) };
        prop_assert_eq!(s, CONC_OK, "{}", conc::error::last_error_message());
        let result = (|| {
            // SAFETY: a live handle; the name is a C string it owns.
            let got = unsafe { CStr::from_ptr(conc_list_name(list)) };
            prop_assert_eq!(got.to_bytes(), body.as_slice());
            let other = other_spelling(&name, &body);
            let mut again = ptr::null_mut();
            // SAFETY: out is a local, the name a C string.
            prop_assert_eq!(unsafe { conc_list_open(&mut again, other.as_ptr()) }, CONC_OK);
            // SAFETY: live handles.
            unsafe {
                prop_assert_eq!(conc_list_len(again), len);
                prop_assert_eq!(conc_list_type(again) as u32, ty as u32);
                prop_assert_eq!(conc_list_unlink(again), CONC_OK);
                prop_assert_eq!(conc_list_close(again), CONC_OK);
            }
            prop_assert!(!exists_in_dev_shm(&body));
            Ok(())
        })();
        // SAFETY: the handle is live and closed once.
        unsafe {
            conc_shm_unlink_name(cname.as_ptr());
            prop_assert_eq!(conc_list_close(list), CONC_OK);
        }
        result?;
    }

    #[test]
    fn invalid_names_are_refused_everywhere(name in invalid_name()) {
        let cname = c_name(&name);
        let mut shm = std::ptr::dangling_mut::<conc_shm>();
        let mut list = std::ptr::dangling_mut::<conc_list>();
        // SAFETY: outs are locals, the name a C string; nothing is created.
        unsafe {
            prop_assert_eq!(conc_shm_create(&mut shm, cname.as_ptr(), 64), CONC_ERR_INVALID_ARGUMENT);
            prop_assert!(shm.is_null());
            let msg = conc::error::last_error_message();
            prop_assert!(msg.contains("conc_shm_create(") && msg.contains("invalid shared memory name"), "{}", msg);
            shm = std::ptr::dangling_mut::<conc_shm>();
            prop_assert_eq!(conc_shm_open(&mut shm, cname.as_ptr()), CONC_ERR_INVALID_ARGUMENT);
            prop_assert!(shm.is_null());
            prop_assert_eq!(conc_shm_unlink_name(cname.as_ptr()), CONC_ERR_INVALID_ARGUMENT);
            let ty = RawType(CONC_TYPE_I64 as u32);
            prop_assert_eq!(conc_list_create(&mut list, cname.as_ptr(), ty, 4), CONC_ERR_INVALID_ARGUMENT);
            prop_assert!(list.is_null());
            list = std::ptr::dangling_mut::<conc_list>();
            prop_assert_eq!(conc_list_open(&mut list, cname.as_ptr()), CONC_ERR_INVALID_ARGUMENT);
            prop_assert!(list.is_null());
        }
    }
}
