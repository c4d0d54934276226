//! Generates `include/conc.h` from the Rust sources with cbindgen.
//!
//! The header is committed; it is rewritten only when its content changes,
//! so an unchanged build never touches its timestamp. `make test` checks
//! that the committed header matches a fresh generation.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    // The C tests are compiled from `cargo test` with the `cc` crate, which
    // needs the target triple that cargo only hands to build scripts.
    println!(
        "cargo:rustc-env=CONC_BUILD_TARGET={}",
        env::var("TARGET").expect("TARGET")
    );

    // The shared library is versioned: programs record `libconc.so.MAJOR`
    // (its SONAME) and keep working with any later release of that major
    // version. `make install` names the file `libconc.so.MAJOR.MINOR.PATCH`.
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,-soname,libconc.so.{}",
        env::var("CARGO_PKG_VERSION_MAJOR").expect("version")
    );

    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is readable and valid");
    let version = format!(
        "\n#define CONC_VERSION_MAJOR {}\n#define CONC_VERSION_MINOR {}\n#define CONC_VERSION_PATCH {}\n",
        env::var("CARGO_PKG_VERSION_MAJOR").expect("version"),
        env::var("CARGO_PKG_VERSION_MINOR").expect("version"),
        env::var("CARGO_PKG_VERSION_PATCH").expect("version"),
    );
    // The version macros, then cbindgen.toml's own after_includes (the
    // synchronization objects' initialisers).
    config.after_includes = Some(format!(
        "{version}{}",
        config.after_includes.take().unwrap_or_default()
    ));
    let bindings = match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        Ok(b) => b,
        Err(e) => panic!("cbindgen could not generate include/conc.h: {e}"),
    };

    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let path = crate_dir.join("include").join("conc.h");
    if fs::read(&path).ok().as_deref() != Some(fresh.as_slice()) {
        fs::create_dir_all(path.parent().expect("include dir")).expect("create include/");
        fs::write(&path, &fresh).expect("write include/conc.h");
    }
}
