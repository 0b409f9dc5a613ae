#!/usr/bin/env bash
# Build Mailpit with its web UI embedded. Called by scripts/install-tools.sh.
#
#   scripts/build-mailpit-ui.sh --stamp      # print the UI's stamp, or fail if it can't build
#   scripts/build-mailpit-ui.sh <module@version> <output binary>
#   scripts/build-mailpit-ui.sh --relock     # regenerate tools/mailpit/ui/package-lock.json
#
# `go install` of github.com/axllent/mailpit builds a binary whose UI bundle
# (server/ui/dist, embedded with go:embed) is missing: the module zip has the
# UI sources but not the built JS/CSS, so the APIs work and /dist/app.js 404s.
# So we copy the module source (from the Go module cache) to a temp dir, build
# the UI there with esbuild (npm), and `go build` that copy.
#
# The npm dependencies are pinned by tools/mailpit/ui/package.json and
# package-lock.json, which replace upstream's: upstream's lock wants
# rapidoc 12.1.0 (API docs page), which the npm registry does not serve, so
# ours pins rapidoc 9.3.8. sass-embedded (a peer dependency of
# esbuild-sass-plugin, with per-platform binaries) is skipped with
# --omit=peer: the plugin uses the pure-JS `sass` package by default.
# Install scripts are not run (--ignore-scripts): the build needs none.
#
# After bumping tools/mailpit to a new Mailpit version, run --relock and
# commit tools/mailpit/ui/.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
uidir="$repo/tools/mailpit/ui"
rapidoc_pin=9.3.8

log() { printf 'build-mailpit-ui: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for c in go node npm; do
    command -v "$c" >/dev/null 2>&1 && continue
    [ "${1:-}" = "--stamp" ] && { log "'$c' not found on PATH"; exit 1; }
    die "'$c' not found on PATH"
done

if [ "${1:-}" = "--stamp" ]; then
    printf '+ui %s\n' "$(cat "$uidir/package.json" "$uidir/package-lock.json" | sha256sum | cut -c1-12)"
    exit 0
fi

# module_dir <module@version>: its source in the Go module cache (downloaded
# through the Go module proxy if needed, checked against tools/mailpit/go.sum).
module_dir() {
    local mod="${1%@*}"
    (cd "$repo/tools/mailpit" &&
        GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly" go mod download "$mod" &&
        GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly" go list -m -f '{{.Dir}}' "$mod")
}

work="$(mktemp -d "${TMPDIR:-/tmp}/mailpit-ui.XXXXXX")"
trap 'rm -rf "$work"' EXIT

npm_flags=(--omit=peer --ignore-scripts --no-audit --no-fund --loglevel=error)

if [ "${1:-}" = "--relock" ]; then
    want="$(awk '$1 == "github.com/axllent/mailpit" { print $1 "@" $2; exit }' "$repo/tools/mailpit/go.mod")"
    [ -n "$want" ] || die "tools/mailpit/go.mod does not require github.com/axllent/mailpit"
    src="$(module_dir "$want")"
    cp "$src/package.json" "$src/package-lock.json" "$work/"
    chmod u+w "$work"/package*.json
    log "relocking $want with rapidoc@$rapidoc_pin"
    (cd "$work" &&
        npm install "${npm_flags[@]}" --package-lock-only --save-exact "rapidoc@$rapidoc_pin" &&
        npm pkg set "//mailpit=$want package.json; rapidoc pinned to $rapidoc_pin. Regenerate with scripts/build-mailpit-ui.sh --relock")
    mkdir -p "$uidir"
    cp "$work/package.json" "$work/package-lock.json" "$uidir/"
    log "wrote $uidir/package.json and package-lock.json"
    exit 0
fi

[ $# -eq 2 ] || die "usage: $(basename "$0") <module@version> <output binary> | --relock"
want="$1"
out="$2"
version="${want##*@}"

locked_for="$(cd "$uidir" && node -p 'require("./package.json")["//mailpit"] || ""' | awk '{ print $1 }')"
[ "$locked_for" = "$want" ] ||
    die "tools/mailpit/ui was locked for '$locked_for', not $want: run scripts/build-mailpit-ui.sh --relock"

src="$(module_dir "$want")"
[ -d "$src/server/ui-src" ] || die "no server/ui-src in $src"
cp -R "$src/." "$work/src"
chmod -R u+w "$work/src"
cp "$uidir/package.json" "$uidir/package-lock.json" "$work/src/"

log "npm ci + esbuild (UI bundle)"
(cd "$work/src" && npm ci "${npm_flags[@]}" && MINIFY=true node esbuild.config.mjs) ||
    die "building the UI failed"
[ -s "$work/src/server/ui/dist/app.js" ] || die "no server/ui/dist/app.js after the UI build"

log "go build $want with the UI embedded"
(cd "$work/src" &&
    GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly" go build \
        -ldflags "-X github.com/axllent/mailpit/config.Version=$version" \
        -o "$work/mailpit" .) || die "go build failed"
mv -f "$work/mailpit" "$out"
