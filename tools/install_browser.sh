#!/usr/bin/env bash
# Install what the findings page's real-browser test needs (tests/system/test_findings_page_browser.py):
#   - Debian's chromium and chromium-driver (apt-get; we run as root), never a browser build of Playwright's own
#     (no `playwright install`: the test launches /usr/bin/chromium through executable_path);
#   - Playwright's Python package (the dev extra in pyproject.toml; pip-installed here when missing);
#   - axe-core from npm (package.json / package-lock.json), injected into the page for the accessibility check.
# Idempotent and fast when everything is present. A step that cannot be done (no root, no apt, no network) is
# reported and skipped: the browser test then skips with that message instead of failing the whole set-up.
set -uo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
status=0

if [ -x /usr/bin/chromium ] && { [ -x /usr/bin/chromedriver ] || [ -x /usr/lib/chromium/chromedriver ]; }; then
  echo "install_browser: chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}') already installed"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "install_browser: installing Debian's chromium and chromium-driver"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
      >/tmp/kv-remediate-install-browser.log 2>&1; then
    echo "install_browser: apt-get could not install chromium (see /tmp/kv-remediate-install-browser.log);" \
         "the browser test will skip" >&2
    status=1
  fi
else
  echo "install_browser: chromium is missing and cannot be installed here (needs apt-get as root);" \
       "the browser test will skip" >&2
  status=1
fi

if "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
  echo "install_browser: playwright (Python) already installed"
else
  "$PY" -m pip install -q "playwright>=1.45,<2" || { echo "install_browser: pip could not install playwright" >&2; status=1; }
fi

if [ -f node_modules/axe-core/axe.min.js ]; then
  echo "install_browser: axe-core $(node -p "require('./node_modules/axe-core/package.json').version" 2>/dev/null) already installed"
elif command -v npm >/dev/null 2>&1; then
  npm install --no-audit --no-fund --loglevel=error || { echo "install_browser: npm could not install axe-core" >&2; status=1; }
else
  echo "install_browser: npm not found; axe-core is missing and the accessibility check will skip" >&2
  status=1
fi

# Never fail `make test` here: the test itself skips with the reason when a part is missing.
[ "$status" = 0 ] && echo "install_browser: ready" || echo "install_browser: incomplete (see above)"
exit 0
