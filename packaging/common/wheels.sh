#!/usr/bin/env bash
# Fill an empty directory with backupd's own wheel and every dependency, from PyPI through
# pip, for each CPython ABI the package supports (binary wheels differ per minor version).
# Usage: wheels.sh OUTDIR PYVERSION...   e.g. wheels.sh /tmp/wheels 3.11 3.12 3.13
# Always a fresh resolution (no stale versions pile up); pip's own download cache
# (~/.cache/pip) makes a rebuild take seconds.
set -euo pipefail
out=$1
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
pip=${PIP:-$root/.venv/bin/pip}
# Only PyPI: ignore pip config files of the build machine (local mirrors, constraints).
export PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_EXTRA_INDEX_URL= PIP_CONSTRAINT=
mkdir -p "$out"
if [ -n "$(ls -A "$out")" ]; then
  echo "wheels.sh: $out is not empty" >&2
  exit 1
fi
# Build from a copy: an in-place build would leave build/ and egg-info next to the sources.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$root/pyproject.toml" "$root/README.md" "$root/backupd" "$src/"
"$pip" wheel --quiet --no-deps --wheel-dir "$out" "$src"
own=$(ls "$out"/backupd-*.whl)
for version in "$@"; do
  abi=cp${version/./}
  "$pip" download --quiet --dest "$out" --only-binary=:all: \
    --python-version "$version" --implementation cp --abi "$abi" \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "$own" pip
done
