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
# The packages need nothing from the development venv (a fresh clone has none): pip comes
# from a throwaway venv of the build machine's python3 unless PIP names one.
pip=${PIP:-}
if [ -z "$pip" ]; then
  "${PYTHON:-python3}" -m venv "$src/.build-venv"
  pip=$src/.build-venv/bin/pip
fi
mkdir "$src/tree"
cp -r "$root/pyproject.toml" "$root/README.md" "$root/backupd" "$src/tree/"
"$pip" wheel --quiet --no-deps --wheel-dir "$out" "$src/tree"
own=$(ls "$out"/backupd-*.whl)
for version in "$@"; do
  abi=cp${version/./}
  "$pip" download --quiet --dest "$out" --only-binary=:all: \
    --python-version "$version" --implementation cp --abi "$abi" \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "$own" pip
done
