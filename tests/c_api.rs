//! Runs the C test programs of `tests/c/` against `include/conc.h` and
//! `libconc.a`: each is compiled with the `cc` crate's view of the C
//! compiler, run, and must exit 0. Its output is shown on failure.
//!
//! `make test` names the library to test in `CONC_STATIC_LIB` (the release
//! build users link); without it, the tests use the one `cargo test` built.

mod common;

fn run_c_test(name: &str) {
    let out_dir = common::profile_dir().join("c-tests");
    std::fs::create_dir_all(&out_dir).expect("create c-tests dir");
    let exe = out_dir.join(name);
    let source = common::root()
        .join("tests")
        .join("c")
        .join(format!("{name}.c"));
    common::compile_c(&source, &exe);
    common::run_c(&exe, name);
}

macro_rules! c_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_c_test(stringify!($name));
            }
        )*
    };
}

c_tests!(
    test_errors,
    test_thread,
    test_thread2,
    test_mmap,
    test_mmap2,
    test_shm,
    test_process,
    test_process2,
    test_list,
    test_list2,
    test_stress,
    test_sync,
    test_sync_torture,
    test_sync_tsan,
    test_queue,
    test_queue_torture,
    test_oom,
    test_pool
);
