# Shared helpers for scripts/*; source it, don't run it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Put the project's virtualenv first on PATH (after scripts/bootstrap has made it).
use_venv() {
    export VIRTUAL_ENV="$VENV"
    export PATH="$VENV/bin:$PATH"
    unset PYTHONHOME
}

# sha256 of the given files' contents (in order), or of nothing.
hash_files() {
    cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1
}
