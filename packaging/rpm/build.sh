#!/usr/bin/env bash
# Build backupd-<version>-1.x86_64.rpm from the repository alone (wheels from PyPI via pip).
# Works on Debian too (its `rpm` package carries rpmbuild). Amazon Linux 2023 runs the
# side-by-side python3.11, so only CPython 3.11 wheels are shipped.
# Usage: packaging/rpm/build.sh [OUTDIR]   (default: dist/). Prints the path of the .rpm.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/dist}
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$root/backupd/__init__.py")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$root/packaging/common/wheels.sh" "$work/wheels" 3.11 >&2
"$root/packaging/common/stage.sh" "$work/stage" "$work/wheels" /usr/lib/systemd/system \
  /etc/sysconfig/backupd /usr/share/zsh/site-functions
rpmbuild -bb --quiet \
  --define "_topdir $work/top" --define "_rpmdir $work/rpms" \
  --define "stagedir $work/stage" --define "backupd_version $version" \
  "$root/packaging/rpm/backupd.spec" >&2
mkdir -p "$out"
rpm=$(find "$work/rpms" -name '*.rpm' | head -n 1)
cp "$rpm" "$out/"
echo "$out/$(basename "$rpm")"
