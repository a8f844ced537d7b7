#!/usr/bin/env bash
# Install what benchmarks/run.py compares llmgw with, at pinned versions.
#
#   benchmarks/install_peers.sh [debian] [litellm] [portkey]   (default: all three)
#
#   debian   nginx-light (nginx with the echo module) and wrk, from Debian's
#            packages; needs root and apt-get. nginx serves the mock upstreams
#            and is the nginx target; wrk is the closed-loop load generator.
#   litellm  the LiteLLM proxy in its own virtual environment,
#            benchmarks/.peers/litellm/ (about 400 MB, 2 to 5 minutes).
#   portkey  @portkey-ai/gateway from the npm registry, in
#            benchmarks/.peers/portkey/node_modules/; needs node and npm.
#
# benchmarks/.peers/ is in .gitignore. Running the script again replaces
# nothing that is already installed at the pinned version. run.py reports a
# peer that is missing as skipped, with the reason.

set -euo pipefail

# LiteLLM 1.82.7 and 1.82.8 carried a credential stealer (March 2026) and
# were removed from PyPI; never pin one of them.
LITELLM_VERSION="1.106.12"
PORTKEY_VERSION="1.15.2"

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEERS_DIR="$BENCH_DIR/.peers"

log() {
    printf '[install_peers] %s\n' "$*" >&2
}

find_python() {
    local candidate
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

install_debian() {
    if command -v nginx >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 &&
        [[ -f /usr/lib/nginx/modules/ngx_http_echo_module.so ]]; then
        log "nginx, its echo module and wrk are installed"
        return 0
    fi
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        log "error: installing nginx-light and wrk needs root and apt-get;" \
            "install them with your package manager"
        return 1
    fi
    log "apt-get install nginx-light wrk"
    apt-get update -qq
    # Debian starts nginx on port 80 after the install unless policy-rc.d
    # forbids it. The benchmark runs its own nginx processes and needs no service.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk
    if command -v service >/dev/null 2>&1 && pgrep -x nginx >/dev/null 2>&1; then
        log "note: a system nginx service is running; the benchmark does not use it"
    fi
}

install_litellm() {
    local venv="$PEERS_DIR/litellm"
    if [[ -x "$venv/bin/litellm" ]] &&
        [[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')" == "$LITELLM_VERSION" ]]; then
        log "litellm $LITELLM_VERSION is installed in $venv"
        return 0
    fi
    local python
    if ! python="$(find_python)"; then
        log "error: LiteLLM needs Python 3.11 or newer on PATH"
        return 1
    fi
    log "creating $venv with $python and installing litellm[proxy]==$LITELLM_VERSION"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "litellm[proxy]==$LITELLM_VERSION"
}

install_portkey() {
    local prefix="$PEERS_DIR/portkey"
    local package_json="$prefix/node_modules/@portkey-ai/gateway/package.json"
    if [[ -f "$package_json" ]] &&
        grep -q "\"version\": \"$PORTKEY_VERSION\"" "$package_json"; then
        log "@portkey-ai/gateway $PORTKEY_VERSION is installed in $prefix"
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        log "error: the Portkey gateway needs node and npm on PATH"
        return 1
    fi
    log "npm install @portkey-ai/gateway@$PORTKEY_VERSION into $prefix"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --save-exact \
        "@portkey-ai/gateway@$PORTKEY_VERSION"
}

main() {
    local parts=("$@")
    if [[ ${#parts[@]} -eq 0 ]]; then
        parts=(debian litellm portkey)
    fi
    mkdir -p "$PEERS_DIR"
    local failed=()
    local part
    for part in "${parts[@]}"; do
        case "$part" in
        debian | litellm | portkey)
            "install_$part" || failed+=("$part")
            ;;
        *)
            log "error: unknown part '$part': expected debian, litellm or portkey"
            exit 2
            ;;
        esac
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
        log "failed: ${failed[*]}"
        exit 1
    fi
    log "done"
}

main "$@"
