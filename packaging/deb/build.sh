#!/usr/bin/env bash
# Build backupd_<version>_amd64.deb from the repository alone (wheels come from PyPI via pip).
# Usage: packaging/deb/build.sh [OUTDIR]   (default: dist/). Prints the path of the .deb.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/packaging/deb
out=${1:-$root/dist}
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$root/backupd/__init__.py")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Binary wheels for Debian 12 (3.11), Ubuntu 24.04 (3.12) and Debian 13 (3.13).
"$root/packaging/common/wheels.sh" "$work/wheels" 3.11 3.12 3.13 >&2
stage=$work/stage
mkdir -m 0755 "$stage"
"$root/packaging/common/stage.sh" "$stage" "$work/wheels" /lib/systemd/system \
  /etc/default/backupd /usr/share/zsh/vendor-completions
install -d "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" "$here/control.in" > "$stage/DEBIAN/control"
install -m 0644 "$here/conffiles" "$stage/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$stage/DEBIAN/"
mkdir -p "$out"
deb=$out/backupd_${version}_amd64.deb
# Wheels are already zip-compressed: light gzip keeps the build quick at nearly the same size.
dpkg-deb --root-owner-group -Zgzip -z3 --build "$stage" "$deb" >&2
echo "$deb"
