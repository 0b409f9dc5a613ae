#!/usr/bin/env bash
# Install the pinned Go tools this project runs natively and in tests into
# <repo>/.tools/bin.
#
#   scripts/install-tools.sh                  # nats-server jaeger mailpit
#   scripts/install-tools.sh natscli          # only the `nats` CLI
#   scripts/install-tools.sh nats-server jaeger mailpit natscli
#
# Each tool is pinned by its own Go module in tools/<name>/ (go.mod + go.sum,
# created with `go get -tool <pkg>@<version>`), so the versions and checksums
# live in git. We run `go install tool` inside that module with GOBIN pointing
# at .tools/bin.
#
# A tool is skipped when its binary exists and .tools/bin/.<name>.version
# matches the pinned module@version from tools/<name>/go.mod, so repeat runs
# take milliseconds. Delete .tools/ to force a rebuild.
#
# Web UIs: a plain `go install` of Jaeger or Mailpit serves no web UI (their
# module zips lack the built UI). A tool with scripts/build-<name>-ui.sh is
# built by that script instead, with its UI embedded, when
# `build-<name>-ui.sh --stamp` says it can (it prints a suffix for the stamp,
# so a changed UI pin rebuilds the tool); otherwise it falls back to
# `go install` with a warning (APIs work, no UI). Mailpit's UI is bundled from
# npm packages pinned in tools/mailpit/ui/ (needs node + npm). Jaeger's UI
# (jaeger-ui) is published on no package registry this project may use, so a
# natively installed Jaeger serves its query API with a placeholder page; the
# compose image has the full UI.
#
# To bump a tool: cd tools/<name> && go get -tool <pkg>@<new version> && go mod tidy
#
# Two tools are not Go programs: `schemathesis` (Python, see
# install_python_tools) and `asyncapi`, the official AsyncAPI parser from npm
# that validates docs/asyncapi.yaml (see install_asyncapi).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$repo/.tools/bin"
default_tools=(nats-server jaeger mailpit)
all_tools=(nats-server jaeger mailpit natscli schemathesis asyncapi)

log() { printf 'install-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    cat >&2 <<EOF
usage: $(basename "$0") [tool ...]
  tools: ${all_tools[*]}
  default: ${default_tools[*]}
EOF
}

# tool_pkg <go.mod>: the package path of the (single) `tool` directive.
tool_pkg() {
    awk '
        $1 == "tool" && $2 != "(" { print $2; exit }
        $1 == "tool" && $2 == "(" { inblock = 1; next }
        inblock && $1 == ")" { exit }
        inblock && NF > 0 { print $1; exit }
    ' "$1"
}

# tool_module_version <go.mod> <pkg>: "module@version" of the required module
# that provides pkg (the longest module path that is a prefix of pkg).
tool_module_version() {
    awk -v pkg="$2" '
        function consider(mod, ver) {
            if ((pkg == mod || index(pkg, mod "/") == 1) && length(mod) > length(best)) {
                best = mod; bestver = ver
            }
        }
        $1 == "require" && $2 == "(" { inblock = 1; next }
        inblock && $1 == ")" { inblock = 0; next }
        inblock && NF >= 2 { consider($1, $2); next }
        $1 == "require" && NF >= 3 { consider($2, $3) }
        END { if (best != "") print best "@" bestver }
    ' "$1"
}

# binary_name <pkg>: what `go install` calls the binary (last path element,
# skipping a major-version suffix such as /v2).
binary_name() {
    local pkg="$1" last
    last="${pkg##*/}"
    if [[ "$last" =~ ^v[0-9]+$ ]]; then
        pkg="${pkg%/*}"
        last="${pkg##*/}"
    fi
    printf '%s\n' "$last"
}

for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
    esac
done

tools=("$@")
if [ ${#tools[@]} -eq 0 ]; then
    tools=("${default_tools[@]}")
fi

# Python tools (schemathesis, for the API contract test) live in one venv,
# .tools/venv, pinned package by package in tools/python/requirements.txt.
install_python_tools() {
    local venv="$repo/.tools/venv" req="$repo/tools/python/requirements.txt"
    local stamp="$repo/.tools/venv/.requirements" want
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [ -x "$venv/bin/schemathesis" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "schemathesis: already installed ($venv)"
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || die "'python3' not found on PATH (needed for schemathesis)"
    local start=$SECONDS
    log "schemathesis: installing tools/python/requirements.txt -> $venv"
    python3 -m venv "$venv" || die "cannot create $venv (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" || die "pip install failed"
    printf '%s\n' "$want" >"$stamp"
    log "schemathesis: done in $((SECONDS - start))s"
}

# The AsyncAPI parser (@asyncapi/parser, which the end-to-end tests run on
# docs/asyncapi.yaml through tools/asyncapi/validate.mjs) is pinned with its
# whole dependency tree by tools/asyncapi/package-lock.json. `npm ci` installs
# exactly that tree, without running any package's install scripts, into
# .tools/asyncapi/node_modules, where validate.mjs looks for it. The copy is
# redone only when package.json or the lock file changes.
install_asyncapi() {
    local src="$repo/tools/asyncapi" dest="$repo/.tools/asyncapi"
    local stamp="$dest/.lock-sha256" want
    want="$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)"
    if [ -f "$dest/node_modules/@asyncapi/parser/package.json" ] && [ -f "$stamp" ] &&
        [ "$(cat "$stamp")" = "$want" ]; then
        log "asyncapi: already installed ($dest)"
        return 0
    fi
    command -v node >/dev/null 2>&1 || die "'node' not found on PATH (needed for the AsyncAPI parser; install Node.js >= 18)"
    command -v npm >/dev/null 2>&1 || die "'npm' not found on PATH (needed for the AsyncAPI parser; it comes with Node.js)"
    local start=$SECONDS
    log "asyncapi: installing tools/asyncapi/package-lock.json -> $dest/node_modules"
    mkdir -p "$dest"
    # A stale stamp must not survive a failed install.
    rm -f "$stamp"
    cp "$src/package.json" "$src/package-lock.json" "$dest/"
    (cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
        die "asyncapi: 'npm ci' failed in $dest"
    printf '%s\n' "$want" >"$stamp"
    log "asyncapi: done in $((SECONDS - start))s"
}

go_tools=()
for t in "${tools[@]}"; do
    if [ "$t" = schemathesis ]; then
        install_python_tools
        continue
    fi
    if [ "$t" = asyncapi ]; then
        install_asyncapi
        continue
    fi
    [ -f "$repo/tools/$t/go.mod" ] || { usage; die "unknown tool '$t' (no tools/$t/go.mod)"; }
    go_tools+=("$t")
done
tools=("${go_tools[@]}")

mkdir -p "$bin"

go_checked=0
need_go() {
    [ "$go_checked" = 1 ] && return 0
    command -v go >/dev/null 2>&1 ||
        die "'go' not found on PATH. Install Go >= $(awk '$1 == "go" { print $2; exit }' "$repo/tools/${tools[0]}/go.mod") from https://go.dev/dl/ (or use docker compose, which needs no local tools)."
    log "using $(go version)"
    go_checked=1
}

for t in "${tools[@]}"; do
    moddir="$repo/tools/$t"
    pkg="$(tool_pkg "$moddir/go.mod")"
    [ -n "$pkg" ] || die "tools/$t/go.mod has no 'tool' directive"
    want="$(tool_module_version "$moddir/go.mod" "$pkg")"
    [ -n "$want" ] || die "tools/$t/go.mod does not require a module providing $pkg"
    exe="$(binary_name "$pkg")"
    stamp="$bin/.$t.version"

    # A tool with scripts/build-<t>-ui.sh is built by it, with its web UI,
    # when it can be; the stamp says which build is installed.
    ui_builder="$repo/scripts/build-$t-ui.sh"
    stamp_want="$want"
    if [ -f "$ui_builder" ]; then
        if ui_stamp="$("$ui_builder" --stamp)"; then
            stamp_want="$want$ui_stamp"
        else
            log "$t: warning: $(basename "$ui_builder") can't build here; installing without the web UI"
            ui_builder=""
        fi
    else
        ui_builder=""
    fi

    if [ -x "$bin/$exe" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_want" ]; then
        log "$t: $stamp_want already installed ($bin/$exe)"
        continue
    fi

    need_go
    start=$SECONDS
    if [ -n "$ui_builder" ]; then
        log "$t: building $want with its web UI -> $bin/$exe (first build can take a few minutes)"
        "$ui_builder" "$want" "$bin/$exe" || die "$t: $(basename "$ui_builder") failed"
    else
        log "$t: installing $want -> $bin/$exe (first build can take a few minutes)"
        # -mod=readonly: fail instead of silently editing go.mod/go.sum.
        (cd "$moddir" && GOBIN="$bin" GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly" go install tool) ||
            die "$t: 'go install tool' failed in tools/$t"
    fi
    [ -x "$bin/$exe" ] || die "$t: expected $bin/$exe after the build"
    printf '%s\n' "$stamp_want" >"$stamp"
    log "$t: done in $((SECONDS - start))s"
done

log "tools in $bin: $(cd "$bin" && ls | tr '\n' ' ')"
