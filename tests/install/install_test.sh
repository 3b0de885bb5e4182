#!/bin/sh
# librvoip-events as another project sees it: `cmake --install` the build into a temporary prefix, check
# what went there (binaries, the library's SONAME, exactly the headers <rvoip/events.hpp> includes, the
# unit, sysusers and tmpfiles files), build tests/install/consumer against that prefix alone, once with
# find_package(RvoipEvents) and once with pkg-config, and run both against the installed rvoip-eventd.
# Nothing this project installed system-wide is used: searches are confined to the prefix and the test
# checks where each build found the package and where each program loads the library from.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
cxx=${CXX:-c++}
tmp=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() { echo "install_test: $*" >&2; exit 1; }

prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; fail "cmake --install failed"; }

# Where GNUInstallDirs put the library (lib, or lib/<multiarch> for a /usr build): beside its .pc.
pc=$(find "$prefix" -name rvoip-events.pc)
[ -n "$pc" ] || fail "no rvoip-events.pc installed"
pcdir=$(dirname "$pc")
libdir=$(dirname "$pcdir")
for f in bin/rvoip-eventd bin/rvoip-eventctl lib/systemd/system/rvoip-eventd.service lib/sysusers.d/rvoip-events.conf \
         lib/tmpfiles.d/rvoip-events.conf share/doc/rvoip-events/README.md; do
    [ -e "$prefix/$f" ] || fail "$f not installed"
done
[ -f "$libdir/cmake/RvoipEvents/RvoipEventsConfig.cmake" ] || fail "no CMake package in $libdir/cmake/RvoipEvents"
soname=$(readelf -d "$libdir/librvoip-events.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = librvoip-events.so.0 ] || fail "SONAME is '$soname', not librvoip-events.so.0"
[ -f "$libdir/$soname" ] || fail "$soname not installed"
# It exports its own namespace only, not the libraries built into it (client/exports.map).
foreign=$(nm -DC --defined-only "$libdir/$soname" | grep -v 'rvoip::events::' | grep -E 'spdlog::|fmt::|nlohmann::|boost::' | head -3)
[ -z "$foreign" ] || fail "librvoip-events exports symbols of libraries built into it: $foreign"
nm -DC --defined-only "$libdir/$soname" | grep -q 'rvoip::events::EventSystem' || fail "librvoip-events exports no EventSystem"
# The unit names the daemon where the tree was configured to install it (not this prefix).
grep -Eq "^ExecStart=/[^ ]*/bin/rvoip-eventd --foreground( |$)" "$prefix/lib/systemd/system/rvoip-eventd.service" ||
    fail "the installed unit has no ExecStart= naming an installed rvoip-eventd"
"$prefix/bin/rvoip-eventctl" --help >/dev/null || fail "installed rvoip-eventctl does not run (its RPATH?)"

# The installed headers are exactly those a compile of <rvoip/events.hpp> opens: none missing (it would
# not compile), none extra, none from the source tree, none from Boost (its types are only declared).
export PKG_CONFIG_LIBDIR="$pcdir" PKG_CONFIG_PATH=
cflags=$(pkg-config --cflags rvoip-events)
libs=$(pkg-config --libs rvoip-events)
printf '#include <rvoip/events.hpp>\n' >"$tmp/only.cpp"
# shellcheck disable=SC2086 # word splitting of the flags is meant
"$cxx" -std=c++23 $cflags -M -MF "$tmp/deps.mk" -o /dev/null "$tmp/only.cpp" || fail "<rvoip/events.hpp> does not compile installed"
tr ' \\' '\n\n' <"$tmp/deps.mk" | grep -v -e '^$' -e ':$' >"$tmp/deps"
grep -q boost "$tmp/deps" && fail "<rvoip/events.hpp> includes Boost: $(grep boost "$tmp/deps" | head -1)"
grep -q "^$src/" "$tmp/deps" && fail "<rvoip/events.hpp> reached the source tree"
xargs realpath <"$tmp/deps" | grep "^$(realpath "$prefix")/" | sort >"$tmp/used"
find "$(realpath "$prefix")/include" -type f | sort >"$tmp/installed"
diff -u "$tmp/installed" "$tmp/used" >&2 || fail "installed headers (-) differ from those <rvoip/events.hpp> includes (+)"

# Consumer 1: CMake, find_package(RvoipEvents) from CMAKE_PREFIX_PATH only (no system paths, no registry).
cmake -S "$src/tests/install/consumer" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_COMPILER="$cxx" \
      -DCMAKE_FIND_USE_CMAKE_SYSTEM_PATH=OFF -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_CXX_FLAGS="-Wall -Wextra" \
      >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; fail "consumer: cmake configure failed"; }
grep -q "^RvoipEvents_DIR:PATH=$prefix/" "$tmp/cmake/CMakeCache.txt" || fail "find_package found RvoipEvents outside $prefix"
cmake --build "$tmp/cmake" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; fail "consumer: cmake build failed"; }
grep -q 'warning:' "$tmp/build.log" && { cat "$tmp/build.log"; fail "consumer (cmake): the installed headers warn"; }

# Consumer 2: one compiler line with pkg-config; the program finds the library through LD_LIBRARY_PATH.
# shellcheck disable=SC2086
"$cxx" -std=c++23 -O2 -Wall -Wextra $cflags -o "$tmp/consumer-pc" "$src/tests/install/consumer/main.cpp" $libs \
    >"$tmp/pc.log" 2>&1 || { cat "$tmp/pc.log"; fail "consumer: pkg-config build failed"; }
[ -s "$tmp/pc.log" ] && { cat "$tmp/pc.log"; fail "consumer (pkg-config): the installed headers warn"; }

# Each program loads librvoip-events from the prefix, not from a system-wide install.
ldd "$tmp/cmake/consumer" | grep -q "librvoip-events.so.0 => $libdir/" || fail "consumer (cmake) does not load the library from $libdir"
LD_LIBRARY_PATH=$libdir ldd "$tmp/consumer-pc" | grep -q "librvoip-events.so.0 => $libdir/" ||
    fail "consumer (pkg-config) does not load the library from $libdir"

# The installed broker, on a socket and shm prefix of its own; --cleanup removes its segments on SIGTERM.
mkdir -m 0700 "$tmp/run"
sock=$tmp/run/broker.sock
"$prefix/bin/rvoip-eventd" --foreground --socket "$sock" --shm-prefix "rvoip-install-$$" --cleanup --log-level warn &
pid=$!
i=0
while [ ! -S "$sock" ]; do
    kill -0 "$pid" 2>/dev/null || fail "the installed rvoip-eventd exited"
    i=$((i + 1)); [ $i -le 100 ] || fail "the installed rvoip-eventd did not listen within 10 s"
    sleep 0.1
done

out=$("$tmp/cmake/consumer" "$sock" via-find-package) || fail "consumer (cmake) failed: $out"
[ "$out" = "received call 42 ref via-find-package" ] || fail "consumer (cmake) printed '$out'"
echo "find_package consumer: $out"
out=$(LD_LIBRARY_PATH=$libdir "$tmp/consumer-pc" "$sock" via-pkg-config) || fail "consumer (pkg-config) failed: $out"
[ "$out" = "received call 42 ref via-pkg-config" ] || fail "consumer (pkg-config) printed '$out'"
echo "pkg-config consumer: $out"

kill "$pid"
wait "$pid" || fail "the installed rvoip-eventd did not stop cleanly on SIGTERM (status $?)"
pid=
echo "install_test: ok"
