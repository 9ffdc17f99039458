#!/usr/bin/env bash
# Builds the js-ledger plugin (ledger.js) into a WebAssembly component with
# componentize-js, against the workspace's wit/ world `kv-plugin`, and writes
# it to <target>/foreign-plugins/js-ledger.wasm, where <target> is
# $CARGO_TARGET_DIR or the workspace's target/.
#
# Idempotent: the pinned tool chain (package-lock.json) is installed with
# `npm ci` into node_modules/ only when the lock file changed, and the
# component is rebuilt only when ledger.js, the lock file or the WIT changed.
# Needs Node.js >= 20 and npm.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$workspace/target}"
case "$target" in /*) ;; *) target="$workspace/$target" ;; esac
out_dir="$target/foreign-plugins"
out="$out_dir/js-ledger.wasm"
wit="$workspace/wit"

die() {
    echo "js-ledger build: $*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 || die "node is not installed (Node.js >= 20 is needed; e.g. apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm is not installed (e.g. apt-get install npm)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node.js >= 20 is needed, found $(node --version)"

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# 1. The pinned tool chain. package.json pins componentize-js (the
#    compiler), jco (`jco wit` below) and @bytecodealliance/preview2-shim:
#    componentize-js 0.23.0 imports the shim at run time without declaring
#    it, and shim 0.26.x cannot read a WIT folder outside the current
#    directory (`reading file .../wit: No such file or directory`), 0.25.0 can.
cd "$here"
lock_hash="$(hash_of package.json package-lock.json)"
stamp="node_modules/.keel-lock-sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
    echo "js-ledger build: installing the pinned tool chain (npm ci)" >&2
    npm ci --ignore-scripts --no-audit --no-fund >&2
    echo "$lock_hash" >"$stamp"
fi
componentize="$here/node_modules/.bin/componentize-js"
jco="$here/node_modules/.bin/jco"
[ -x "$componentize" ] || die "$componentize is missing after npm ci"
[ -x "$jco" ] || die "$jco is missing after npm ci"

# 2. The component, unless it is up to date.
input_hash="$(hash_of ledger.js package-lock.json $(find "$wit" -name '*.wit' | sort))"
mkdir -p "$out_dir"
if [ -f "$out" ] && [ -f "$out.inputs" ] && [ "$(cat "$out.inputs")" = "$input_hash" ]; then
    echo "js-ledger build: $out is up to date" >&2
    exit 0
fi
tmp="$(mktemp "$out_dir/.js-ledger.XXXXXX.wasm")"
trap 'rm -f "$tmp"' EXIT
# The host serves no wasi:http: the engine's fetch() is left out.
"$componentize" ledger.js \
    --wit "$wit" \
    --world-name kv-plugin \
    --disable http fetch-event \
    --out "$tmp" >&2

# 3. Its imports must be ones the host links (wit/keel.wit's kv-plugin plus
#    the sealed WASI 0.2: io, clocks, random, cli, filesystem).
imports="$("$jco" wit "$tmp" | sed -n 's/^ *import \([^;]*\);.*/\1/p')"
[ -n "$imports" ] || die "could not read the component's imports with jco wit"
unexpected="$(printf '%s\n' "$imports" | grep -Ev \
    '^(wasi:keyvalue/(store|atomics|batch)@0\.2\.0-draft2|keel:plugin/context@0\.1\.0|wasi:(io|clocks|random|cli|filesystem)/[a-z-]+@0\.2\.[0-9]+)$' || true)"
[ -z "$unexpected" ] || die "the component imports what the host does not serve:
$unexpected"
exports="$("$jco" wit "$tmp" | sed -n 's/^ *export \([^;]*\);.*/\1/p')"
[ "$exports" = "keel:plugin/guest@0.1.0" ] || die "the component must export keel:plugin/guest@0.1.0 only, exports: $exports"

mv "$tmp" "$out"
trap - EXIT
echo "$input_hash" >"$out.inputs"
echo "js-ledger build: wrote $out ($(stat -c %s "$out") bytes)" >&2
