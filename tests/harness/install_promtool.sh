#!/usr/bin/env bash
# Install promtool (from Debian's prometheus package) into <repo>/.cache/promtool for the rule tests.
#
# Why not `apt-get install`: the test setup must not change the system. The package is
# fetched with `apt-get download` (no root needed once apt's lists exist) and unpacked
# with `dpkg-deb -x` into a git-ignored folder; tests/deploy/test_prometheus_rules.py looks there.
# Idempotent: does nothing when the binary is already in place.
# Only when the download fails because apt has no package lists, and we are root, does
# it run `apt-get update` (which refreshes /var/lib/apt/lists and touches nothing else).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dest="$repo/.cache/promtool"
binary="$dest/usr/bin/promtool"

if [ -x "$binary" ]; then
    exit 0
fi
for tool in apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install_promtool: $tool not found (not a Debian-like system);" \
             "install promtool and set PROMTOOL_BIN" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

apt_options=(-q)
if [ "$(id -u)" = 0 ]; then
    # apt drops privileges to _apt, which cannot write into our private temp dir.
    apt_options+=(-o APT::Sandbox::User=root)
fi

download() {
    (cd "$work" && apt-get "${apt_options[@]}" download prometheus)
}

if ! download; then
    if [ "$(id -u)" = 0 ]; then
        echo "install_promtool: download failed; refreshing apt's package lists" >&2
        apt-get -q update
        download
    else
        echo "install_promtool: apt-get download failed; run 'apt-get update' as root," \
             "or set PROMTOOL_BIN to a promtool binary" >&2
        exit 1
    fi
fi

debs=("$work"/prometheus_*.deb)
# Unpack into a staging folder, check it runs, then move it into place in one step,
# so an interrupted run never leaves a half-extracted tree that looks installed.
stage="$work/root"
dpkg-deb -x "${debs[0]}" "$stage"
"$stage/usr/bin/promtool" --version >/dev/null 2>&1
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$stage" "$dest"
echo "install_promtool: installed $binary" >&2
