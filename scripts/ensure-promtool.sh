#!/usr/bin/env bash
# Make `promtool` available for the observability tests; print its path.
#
# A promtool on PATH wins. Otherwise the binary is taken out of Debian's
# `prometheus` package into .loraplex/bin (git-ignored): `apt-get download`
# and `dpkg-deb -x` rather than `apt-get install`, so no Prometheus server is
# installed or started as a system service, and none of the package's web-UI
# dependencies come along. About 19 MB to download, a few seconds.
# Idempotent and quiet: a second run only prints the path.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
dest="$repo/.loraplex/bin"

if command -v promtool >/dev/null 2>&1; then
    command -v promtool
    exit 0
fi
if [ -x "$dest/promtool" ]; then
    echo "$dest/promtool"
    exit 0
fi

for tool in apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "ensure-promtool: no $tool here; install Prometheus's promtool and put it on PATH" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
# `apt-get download` needs current package lists: refresh them once if the
# download fails (no lists yet, or the version they name has left the mirror).
download() { apt-get download -qq -o APT::Sandbox::User=root prometheus >/dev/null; }
if ! download 2>/dev/null; then
    apt-get update -qq >/dev/null
    download
fi
dpkg-deb -x prometheus_*.deb root
mkdir -p "$dest"
install -m 0755 root/usr/bin/promtool "$dest/promtool"
"$dest/promtool" --version >/dev/null
echo "$dest/promtool"
