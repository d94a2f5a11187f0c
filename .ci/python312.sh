#!/usr/bin/env bash
# Prints the path of a CPython 3.12 interpreter, or fails saying where it looked.
# This machine's image has one from pyenv (its shim refuses while the global version is 3.11,
# so the interpreter is taken from pyenv's versions directory); Debian 12 packages none.
set -euo pipefail
if python3.12 -c 'import sys' >/dev/null 2>&1; then
    command -v python3.12
    exit 0
fi
root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
for candidate in "$root"/versions/3.12.*/bin/python3.12; do
    if [[ -x "$candidate" ]]; then
        echo "$candidate"
        exit 0
    fi
done
echo "python 3.12 not found (PATH, $root/versions/3.12.*)" >&2
exit 1
