#!/usr/bin/env bash
# Install the pinned Azure CLI (azure-cli from PyPI) into its own cached venv, .tools/azcli-venv, for
# tests/system/test_az_cli_parse.py: every `az` command kv-remediate prints must pass the real CLI's argument parser.
# Run by `make unit` (part of `make test`), like checkov in infra/check.sh. Idempotent: does nothing when the stamp
# for the pinned version is there. Non-interactive; safe in CI (PyPI reachable). Takes about two minutes once.
set -euo pipefail
cd "$(dirname "$0")/.."

AZCLI_VERSION="${AZCLI_VERSION:-2.91.0}"
AZCLI_VENV="${AZCLI_VENV:-.tools/azcli-venv}"
AZCLI_PYTHON="${AZCLI_PYTHON:-python3}"
STAMP="$AZCLI_VENV/.installed-azure-cli-$AZCLI_VERSION"

# strace lets tests/system/test_az_cli_parse.py prove the CLI opens no connection but loopback (Debian's package; as root).
if ! command -v strace >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get install -y -q strace >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q strace >/dev/null 2>&1; }; } ||
        echo "install_azcli: strace could not be installed; the loopback-only check will be skipped" >&2
fi

if [ -f "$STAMP" ] && [ -x "$AZCLI_VENV/bin/az" ]; then
    echo "install_azcli: azure-cli $AZCLI_VERSION already installed in $AZCLI_VENV"
    exit 0
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
install() {
    rm -rf "$AZCLI_VENV"
    "$AZCLI_PYTHON" -m venv "$AZCLI_VENV" &&
        "$AZCLI_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
            "azure-cli==$AZCLI_VERSION" >"$log" 2>&1
}
echo "install_azcli: installing azure-cli==$AZCLI_VERSION into $AZCLI_VENV (once; cached afterwards)"
if ! install; then
    echo "install_azcli: install failed; retrying once" >&2
    tail -n 20 "$log" >&2
    sleep 5
    if ! install; then
        tail -n 40 "$log" >&2
        echo "install_azcli: could not install azure-cli==$AZCLI_VERSION (needs PyPI); see the log above" >&2
        exit 1
    fi
fi
installed="$("$AZCLI_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("azure-cli"))')"
if [ "$installed" != "$AZCLI_VERSION" ]; then
    echo "install_azcli: expected azure-cli $AZCLI_VERSION, found $installed" >&2
    exit 1
fi
touch "$STAMP"
echo "install_azcli: azure-cli $installed installed"
