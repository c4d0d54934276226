//! Runs the C test programs of `tests/c/` against `include/conc.h` and
//! `libconc.a`: each is compiled with the `cc` crate's view of the C
//! compiler, run, and must exit 0. Its output is shown on failure.
//!
//! `make test` names the library to test in `CONC_STATIC_LIB` (the release
//! build users link); without it, the tests use the one `cargo test` built.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target directory of this build (`target/debug`), where cargo put
/// `libconc.a` beside the test executables' `deps/` folder.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// The system libraries libconc.a needs: the list the Makefile took from
/// `cargo rustc -- --print native-static-libs`, or glibc's usual set when
/// the test runs outside `make test`.
fn native_static_libs() -> Vec<String> {
    let libs = std::env::var("CONC_NATIVE_STATIC_LIBS")
        .unwrap_or_else(|_| "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc".to_string());
    libs.split_whitespace().map(str::to_string).collect()
}

fn run_c_test(name: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = profile_dir();
    // `cargo test` rebuilds deps/libconc.a; the copy in target/<profile>/ is
    // refreshed only by `cargo build`, so it may be stale.
    let lib = std::env::var_os("CONC_STATIC_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("deps").join("libconc.a"));
    assert!(lib.exists(), "{} is missing", lib.display());
    let out_dir = dir.join("c-tests");
    std::fs::create_dir_all(&out_dir).expect("create c-tests dir");
    let exe = out_dir.join(name);
    let source = root.join("tests").join("c").join(format!("{name}.c"));

    let target = env!("CONC_BUILD_TARGET");
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .target(target)
        .host(target)
        .opt_level(1)
        .debug(true)
        .get_compiler();
    let output = compiler
        .to_command()
        .args([
            "-std=c11",
            "-D_GNU_SOURCE",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pthread",
        ])
        .arg("-I")
        .arg(root.join("include"))
        .arg("-I")
        .arg(root.join("tests").join("c"))
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .arg(&lib)
        .args(native_static_libs())
        .output()
        .expect("run the C compiler");
    assert!(
        output.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );

    let run = Command::new(&exe)
        .current_dir(root.join("tests").join("c"))
        .output()
        .expect("run the C test");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        run.status.success(),
        "{name} failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    assert!(
        stdout.contains(" passed, 0 failed"),
        "{name} printed no summary line:\n{stdout}"
    );
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
    test_mmap,
    test_shm,
    test_process,
    test_list
);
