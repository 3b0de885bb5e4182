#!/bin/sh
# The systemd unit loads cleanly: `systemd-analyze verify` on rvoip-eventd.service, with no error and no
# warning about it. Usage: verify.sh UNIT DAEMON
#
# verify checks that ExecStart= is executable, and the installed path is not there in a build tree: the
# unit is copied into a temporary directory with ExecStart= naming the built daemon, and nothing else
# changed. verify needs no systemd running as PID 1 (it loads the unit into a manager of its own, in
# test mode), so this runs in a container as well. It reports unknown keys and values it cannot parse as
# warnings and may still exit 0: any line about our unit fails the test. Lines about other units (the
# host's own, reached through After= and WantedBy=) are shown but not held against us.
unit="$1"
daemon="$2"
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not installed (Debian: systemd)"; exit 1; }
[ -x "$daemon" ] || { echo "no daemon at '$daemon'"; exit 1; }
name=$(basename "$unit")
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
sed "s|^ExecStart=/usr/local/bin/rvoip-eventd |ExecStart=$daemon |" "$unit" >"$dir/$name"
grep -q "^ExecStart=$daemon " "$dir/$name" || { echo "$name: no 'ExecStart=/usr/local/bin/rvoip-eventd ' line to point at the build"; exit 1; }
out=$(systemd-analyze verify --recursive-errors=no "$dir/$name" 2>&1)
rc=$?
[ -n "$out" ] && echo "$out"
if [ $rc -ne 0 ] || echo "$out" | grep -q "$name"; then
    echo "systemd-analyze verify: $name does not load cleanly (exit status $rc)"
    exit 1
fi
echo "systemd-analyze verify: $name loads cleanly"
