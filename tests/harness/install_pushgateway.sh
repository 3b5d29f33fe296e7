#!/usr/bin/env bash
# Install Debian's prometheus-pushgateway into <repo>/.cache/pushgateway for the tests.
#
# Why not `apt-get install`: the test setup must not change the system. The package is
# fetched with `apt-get download` (no root needed once apt's lists exist) and unpacked
# with `dpkg-deb -x` into a git-ignored folder; tests/harness/pushgateway.py looks there.
# Idempotent: does nothing when the binary is already in place.
# Only when the download fails because apt has no package lists, and we are root, does
# it run `apt-get update` (which refreshes /var/lib/apt/lists and touches nothing else).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dest="$repo/.cache/pushgateway"
binary="$dest/usr/bin/prometheus-pushgateway"

if [ -x "$binary" ]; then
    exit 0
fi
for tool in apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install_pushgateway: $tool not found (not a Debian-like system);" \
             "install a Prometheus Pushgateway and set PUSHGATEWAY_BIN" >&2
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
    (cd "$work" && apt-get "${apt_options[@]}" download prometheus-pushgateway)
}

if ! download; then
    if [ "$(id -u)" = 0 ]; then
        echo "install_pushgateway: download failed; refreshing apt's package lists" >&2
        apt-get -q update
        download
    else
        echo "install_pushgateway: apt-get download failed; run 'apt-get update' as root," \
             "or set PUSHGATEWAY_BIN to a pushgateway binary" >&2
        exit 1
    fi
fi

debs=("$work"/prometheus-pushgateway_*.deb)
# Unpack into a staging folder, check it runs, then move it into place in one step,
# so an interrupted run never leaves a half-extracted tree that looks installed.
stage="$work/root"
dpkg-deb -x "${debs[0]}" "$stage"
"$stage/usr/bin/prometheus-pushgateway" --version >/dev/null 2>&1
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$stage" "$dest"
echo "install_pushgateway: installed $binary" >&2
