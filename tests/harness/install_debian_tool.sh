#!/usr/bin/env bash
# Install one program from a Debian package into <repo>/.cache/<name> for the tests:
#   install_debian_tool.sh NAME PACKAGE PROGRAM ENV_VAR
#   e.g. install_debian_tool.sh pushgateway prometheus-pushgateway prometheus-pushgateway PUSHGATEWAY_BIN
#        install_debian_tool.sh promtool prometheus promtool PROMTOOL_BIN
#
# Why not `apt-get install`: the test setup must not change the system. The package is
# fetched with `apt-get download` (no root needed once apt's lists exist) and unpacked
# with `dpkg-deb -x` into a git-ignored folder, where the tests look (or they use ENV_VAR's binary).
# Idempotent: does nothing when the binary is already in place.
# Only when the download fails because apt has no package lists, and we are root, does
# it run `apt-get update` (which refreshes /var/lib/apt/lists and touches nothing else).
set -euo pipefail

if [ $# -ne 4 ]; then
    echo "usage: $0 NAME PACKAGE PROGRAM ENV_VAR" >&2
    exit 2
fi
name="$1" package="$2" program="$3" env_var="$4"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dest="$repo/.cache/$name"
binary="$dest/usr/bin/$program"

if [ -x "$binary" ]; then
    exit 0
fi
for tool in apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install $name: $tool not found (not a Debian-like system);" \
             "install $program and set $env_var to it" >&2
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
    (cd "$work" && apt-get "${apt_options[@]}" download "$package")
}

if ! download; then
    if [ "$(id -u)" = 0 ]; then
        echo "install $name: download failed; refreshing apt's package lists" >&2
        apt-get -q update
        download
    else
        echo "install $name: apt-get download failed; run 'apt-get update' as root," \
             "or set $env_var to a $program binary" >&2
        exit 1
    fi
fi

debs=("$work"/"${package}"_*.deb)
# Unpack into a staging folder, check it runs, then move it into place in one step,
# so an interrupted run never leaves a half-extracted tree that looks installed.
stage="$work/root"
dpkg-deb -x "${debs[0]}" "$stage"
"$stage/usr/bin/$program" --version >/dev/null 2>&1
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$stage" "$dest"
echo "install $name: installed $binary" >&2
