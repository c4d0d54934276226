//! What the integration tests that build C programs share: where
//! `libconc.a` is, the system libraries it needs, and a C compiler set up
//! as for the C tests (`-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror`).
//!
//! `make test` names the library to test in `CONC_STATIC_LIB` (the release
//! build users link); without it, the tests use the one `cargo test` built.

#![allow(dead_code)] // each test crate uses its own part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The target directory of this build (`target/debug`), where cargo put
/// `libconc.a` beside the test executables' `deps/` folder.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// The system libraries libconc.a needs: the list the Makefile took from
/// `cargo rustc -- --print native-static-libs`, or glibc's usual set when
/// the test runs outside `make test`.
pub fn native_static_libs() -> Vec<String> {
    let libs = std::env::var("CONC_NATIVE_STATIC_LIBS")
        .unwrap_or_else(|_| "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc".to_string());
    libs.split_whitespace().map(str::to_string).collect()
}

/// The static library under test.
pub fn static_lib() -> PathBuf {
    // `cargo test` rebuilds deps/libconc.a; the copy in target/<profile>/ is
    // refreshed only by `cargo build`, so it may be stale.
    let lib = std::env::var_os("CONC_STATIC_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("deps").join("libconc.a"));
    assert!(lib.exists(), "{} is missing", lib.display());
    lib
}

/// Compiles the C program `source` into `exe` against `include/conc.h`,
/// `tests/c/check.h` and libconc.a, panicking with the compiler's output
/// on failure.
pub fn compile_c(source: &Path, exe: &Path) {
    let lib = static_lib();
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
        .arg(root().join("include"))
        .arg("-I")
        .arg(root().join("tests").join("c"))
        .arg(source)
        .arg("-o")
        .arg(exe)
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
}

/// Runs a compiled C test from `tests/c/`; it must exit 0 and print the
/// harness's `N passed, 0 failed` line. Returns its standard output.
pub fn run_c(exe: &Path, name: &str) -> String {
    let run = Command::new(exe)
        .current_dir(root().join("tests").join("c"))
        .output()
        .expect("run the C test");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    // The program's own summary line, shown even when the test passes
    // (the test harness captures print!, not direct writes), so that
    // `make test` lists every C program's `N passed, N failed`.
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed, ") && l.contains(" failed"))
        .unwrap_or("no summary line");
    let _ = writeln!(
        std::io::stderr(),
        "C program {name}: {summary}{}",
        if run.status.success() {
            ""
        } else {
            " (exit: failure)"
        }
    );
    assert!(
        run.status.success(),
        "{name} failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    assert!(
        stdout.contains(" passed, 0 failed"),
        "{name} printed no summary line:\n{stdout}"
    );
    stdout
}
