#!/usr/bin/env bash
# Builds the Python ledger plugin into a WebAssembly component:
#
#   plugins/python-ledger/build.sh     (from any directory)
#
# 1. Creates a virtual environment under <target>/foreign-tools/python
#    (<target> is $CARGO_TARGET_DIR, or the workspace's target/) unless it
#    already holds the pinned componentize-py.
# 2. Installs componentize-py from requirements.txt: exact version, wheel
#    hashes checked (pip --require-hashes).
# 3. Runs componentize-py against the workspace's wit/ (world `plugin`) on
#    app.py and its modules, writing <target>/foreign-plugins/python-ledger.wasm.
#
# Idempotent: a second run reuses the environment and rebuilds the component.
set -euo pipefail

plugin_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$plugin_dir/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$workspace/target}"
case "$target" in /*) ;; *) target="$workspace/$target" ;; esac
venv="$target/foreign-tools/python"
out_dir="$target/foreign-plugins"
out="$out_dir/python-ledger.wasm"
requirements="$plugin_dir/requirements.txt"
pinned="$(sed -n 's/^componentize-py==\([^ ]*\).*/\1/p' "$requirements")"

say() { echo "python-ledger: $*" >&2; }
die() { echo "python-ledger: error: $*" >&2; exit 1; }

python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 \
    || die "$python not found: install Python 3.9 or newer (with the venv and pip modules), or set PYTHON"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
    || die "$python is $("$python" --version 2>&1); componentize-py needs Python 3.9 or newer"

installed=""
if [ -x "$venv/bin/componentize-py" ]; then
    installed="$("$venv/bin/componentize-py" --version 2>/dev/null | awk '{print $2}')" || installed=""
fi
if [ "$installed" != "$pinned" ]; then
    if [ ! -x "$venv/bin/python" ]; then
        say "creating a virtual environment in $venv"
        "$python" -m venv "$venv" \
            || die "could not create a virtual environment (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    "$venv/bin/python" -m pip --version >/dev/null 2>&1 \
        || die "pip is missing from $venv (on Debian/Ubuntu: apt-get install python3-pip python3-venv)"
    say "installing componentize-py $pinned (hash-checked) into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes -r "$requirements" \
        || die "installing componentize-py $pinned failed (see pip's message above)"
else
    say "using componentize-py $installed from $venv"
fi

mkdir -p "$out_dir"
say "componentizing $plugin_dir/app.py against $workspace/wit (world plugin)"
start=$(date +%s)
# -p: where app.py and its modules live. VIRTUAL_ENV is cleared so that
# an environment the caller activated adds nothing to the component.
unset VIRTUAL_ENV
"$venv/bin/componentize-py" -d "$workspace/wit" -w plugin \
    componentize app -p "$plugin_dir" -o "$out.tmp"
mv "$out.tmp" "$out"
say "wrote $out ($(wc -c <"$out") bytes) in $(( $(date +%s) - start ))s"
