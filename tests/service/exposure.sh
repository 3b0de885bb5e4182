#!/bin/sh
# The systemd unit's hardening: `systemd-analyze security` must rate rvoip-eventd.service at an exposure
# of 2.0 or less (DEVELOPERS' standard), checked offline against the unit file in the tree.
unit="$1"
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not installed (Debian: systemd)"; exit 1; }
out=$(systemd-analyze security --offline=true "$unit" 2>&1) || { echo "$out"; exit 1; }
level=$(echo "$out" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
echo "exposure of $(basename "$unit"): $level (at most 2.0)"
[ -n "$level" ] && awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }' || { echo "$out" | grep '✗'; exit 1; }
