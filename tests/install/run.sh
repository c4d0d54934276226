#!/bin/sh
# `make test`'s install test: installs conc into a temporary prefix, builds
# programs from there the three ways users do (pkg-config --static against
# libconc.a, pkg-config against libconc.so, CMake's find_package), runs
# them, checks a DESTDIR staging install and that uninstall leaves no file.
# pkg-config and CMake are optional: a part whose tool is missing prints
# "skipped: ..." (or fails, with CONC_REQUIRE_ALL=1).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
MAKE=${MAKE:-make}
CC=${CC:-cc}
CXX=${CXX:-c++}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/conc-install-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

fail() {
    echo "install test: $*" >&2
    exit 1
}

# have TOOL CHECK: true when TOOL is on PATH; otherwise says CHECK is
# skipped, or fails under CONC_REQUIRE_ALL=1.
have() {
    command -v "$1" >/dev/null 2>&1 && return 0
    [ "${CONC_REQUIRE_ALL:-}" = 1 ] && fail "$2: $1 not found, and CONC_REQUIRE_ALL=1 requires every check"
    echo "skipped: $2 ($1 not found)"
    return 1
}

version=$("$MAKE" -s -C "$root" --no-print-directory print-version)
major=${version%%.*}

# The files make install must put under a prefix, and nothing else.
expected_files() {
    printf '%s\n' include/conc.h include/conc.hpp lib/libconc.a lib/libconc.so \
        "lib/libconc.so.$major" "lib/libconc.so.$version" lib/pkgconfig/conc.pc \
        lib/cmake/conc/concConfig.cmake lib/cmake/conc/concConfigVersion.cmake | sort
}
files_under() {
    (cd "$1" && find . ! -type d | sed 's|^\./||' | sort)
}

prefix=$tmp/prefix
"$MAKE" -s -C "$root" --no-print-directory install PREFIX="$prefix" >/dev/null
[ "$(files_under "$prefix")" = "$(expected_files)" ] ||
    fail "installed files differ: $(files_under "$prefix" | tr '\n' ' ')"
[ "$(readlink "$prefix/lib/libconc.so")" = "libconc.so.$major" ] || fail "bad libconc.so link"
[ "$(readlink "$prefix/lib/libconc.so.$major")" = "libconc.so.$version" ] ||
    fail "bad libconc.so.$major link"
echo "install test: make install PREFIX=... installed $(expected_files | wc -l) files"

want_c="conc $version (header $(echo "$version" | sed 's/-.*//')) from C: 12 * 12 = 144"
needed() {
    readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
}

# The installed libconc.so is stripped; libconc.a keeps its debug info.
readelf -S "$prefix/lib/libconc.so.$version" | grep -q '\.debug_' &&
    fail "installed libconc.so.$version is not stripped"
readelf -S "$prefix/lib/libconc.a" 2>/dev/null | grep -q '\.debug_line' ||
    fail "installed libconc.a lost its line tables"
echo "install test: libconc.so.$version is stripped; libconc.a keeps its line tables"

# 0. C with plain flags, as the README shows, against libconc.so found
# through its rpath (no pkg-config needed).
"$CC" -std=gnu11 -Wall -Wextra -pedantic -Werror -I"$prefix/include" "$here/app.c" \
    -o "$tmp/app_plain" -L"$prefix/lib" -lconc -Wl,-rpath,"$prefix/lib"
needed "$tmp/app_plain" | grep -qx "libconc.so.$major" || fail "app_plain does not need libconc.so.$major"
[ "$("$tmp/app_plain")" = "$want_c" ] || fail "app_plain printed: $("$tmp/app_plain")"
echo "install test: C with -I, -L, -lconc and -Wl,-rpath (libconc.so.$major): ok"

if have pkg-config "install test via pkg-config"; then
# 1. C through pkg-config --static, against libconc.a.
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
[ "$(pkg-config --modversion conc)" = "$version" ] || fail "pkg-config --modversion"
# shellcheck disable=SC2046 # word splitting of the flags is wanted
"$CC" -std=c11 -Wall -Wextra -pedantic -Werror $(pkg-config --cflags conc) \
    "$here/app.c" -o "$tmp/app_static" \
    $(pkg-config --static --libs conc | sed 's/-lconc/-l:libconc.a/')
needed "$tmp/app_static" | grep -q libconc && fail "app_static needs libconc.so"
[ "$("$tmp/app_static")" = "$want_c" ] || fail "app_static printed: $("$tmp/app_static")"
echo "install test: C via pkg-config --static (libconc.a): ok"

# 2. C through pkg-config, against libconc.so (found through its rpath).
# shellcheck disable=SC2046
"$CC" -std=c11 -Wall -Wextra -pedantic -Werror $(pkg-config --cflags conc) \
    "$here/app.c" -o "$tmp/app_shared" \
    $(pkg-config --libs conc) -Wl,-rpath,"$(pkg-config --variable=libdir conc)"
needed "$tmp/app_shared" | grep -qx "libconc.so.$major" || fail "app_shared does not need libconc.so.$major"
[ "$("$tmp/app_shared")" = "$want_c" ] || fail "app_shared printed: $("$tmp/app_shared")"
echo "install test: C via pkg-config (libconc.so.$major): ok"
fi

# 3. C++ through CMake, from a moved prefix: the CMake files are relocatable.
moved=$tmp/moved
mv "$prefix" "$moved"
if have cmake "install test via CMake"; then
cmake_build() { # build directory, then cmake options
    dir=$1
    shift
    cmake -S "$here" -B "$dir" -DCMAKE_PREFIX_PATH="$moved" \
        -DCMAKE_CXX_COMPILER="$(command -v "$CXX")" -DCONC_EXPECTED_VERSION="$version" "$@" \
        >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; fail "cmake configure failed"; }
    cmake --build "$dir" >>"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; fail "cmake build failed"; }
}
want_cpp="conc $version from C++: 12 * 12 = 144
conc::error: invalid argument"
check_cpp() { # program, then "static" or "shared"
    out=$("$1") || fail "$1 failed"
    [ "$out" = "$want_cpp" ] || fail "$1 printed: $out"
    if [ "$2" = static ]; then
        needed "$1" | grep -q libconc && fail "$1 needs libconc.so"
    else
        needed "$1" | grep -qx "libconc.so.$major" || fail "$1 does not need libconc.so.$major"
    fi
    return 0
}
cmake_build "$tmp/cmake"
check_cpp "$tmp/cmake/app" static
check_cpp "$tmp/cmake/app_shared" shared
cmake_build "$tmp/cmake-shared" -DCONC_USE_SHARED=ON
check_cpp "$tmp/cmake-shared/app" shared
echo "install test: C++ via CMake find_package(conc): conc::conc (static; shared with CONC_USE_SHARED) and conc::conc_shared: ok"
fi

# Uninstall leaves no file behind.
"$MAKE" -s -C "$root" --no-print-directory uninstall PREFIX="$moved" >/dev/null
[ -z "$(files_under "$moved")" ] || fail "left after uninstall: $(files_under "$moved" | tr '\n' ' ')"
[ ! -e "$moved/lib/cmake/conc" ] || fail "uninstall left lib/cmake/conc"
echo "install test: make uninstall removed every file"

# DESTDIR stages the tree; the files still name PREFIX.
# (conc.pc is written by make install itself, so this needs no pkg-config.)
stage=$tmp/stage
"$MAKE" -s -C "$root" --no-print-directory install DESTDIR="$stage" PREFIX=/opt/conc >/dev/null
[ "$(files_under "$stage/opt/conc")" = "$(expected_files)" ] || fail "DESTDIR install differs"
grep -qx 'prefix=/opt/conc' "$stage/opt/conc/lib/pkgconfig/conc.pc" || fail "conc.pc does not name PREFIX"
"$MAKE" -s -C "$root" --no-print-directory uninstall DESTDIR="$stage" PREFIX=/opt/conc >/dev/null
[ -z "$(files_under "$stage")" ] || fail "left after DESTDIR uninstall: $(files_under "$stage" | tr '\n' ' ')"
echo "install test: DESTDIR=... install and uninstall: ok"
