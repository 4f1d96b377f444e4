#!/usr/bin/env bash
# Install the pinned Azurite (Azure Storage emulator) into ./node_modules for the storage tests and benchmarks.
# Idempotent: does nothing when node_modules/.bin/azurite already reports the pinned version.
# package.json / package-lock.json are committed so the install is repeatable (npm ci when the lock exists).
set -euo pipefail
cd "$(dirname "$0")/.."

AZURITE_VERSION="3.35.0"   # runs on Node 20; newer majors may require a newer Node.
BIN="node_modules/.bin/azurite"

if ! command -v npm >/dev/null 2>&1; then
  echo "install_azurite: npm not found; install Node.js 20 (with npm) and re-run 'make test'" >&2
  exit 1
fi

if [ -x "$BIN" ] && [ "$("$BIN" --version 2>/dev/null || true)" = "$AZURITE_VERSION" ]; then
  echo "install_azurite: azurite $AZURITE_VERSION already installed"
  exit 0
fi

if [ -f package-lock.json ] && grep -q "\"node_modules/azurite\"" package-lock.json; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error --save-exact --prefix . "azurite@$AZURITE_VERSION"
fi

installed="$("$BIN" --version)"
if [ "$installed" != "$AZURITE_VERSION" ]; then
  echo "install_azurite: expected azurite $AZURITE_VERSION, found $installed" >&2
  exit 1
fi
echo "install_azurite: azurite $installed installed"
