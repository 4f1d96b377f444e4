#!/usr/bin/env bash
# infra-check (run by `make infra-check`, part of `make test`):
#   1. pycep-parser parses every .bicep file under infra/ (app venv: ${PY:-.venv/bin/python});
#   2. checkov (own cached venv under .tools/, pinned) scans infra/ with the Bicep framework, offline
#      (--skip-download); fails on any failed check and on any parsing error (checkov itself exits 0
#      when a file does not parse, so its JSON report is read instead of its exit code).
# Prints one summary line per step. Non-interactive; safe in CI (CI=true, fresh machine, PyPI reachable).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
CHECKOV_VENV="${CHECKOV_VENV:-.tools/checkov-venv}"
CHECKOV_PYTHON="${CHECKOV_PYTHON:-python3}"
STAMP="$CHECKOV_VENV/.installed-checkov-$CHECKOV_VERSION"

# --- 1. pycep-parser ---------------------------------------------------------------------------------
"$PY" - <<'EOF'
import pathlib
import sys

from pycep import BicepParser

files = sorted(pathlib.Path("infra").rglob("*.bicep"))
parser = BicepParser(add_line_numbers=True)
errors = []
for path in files:
    try:
        tree = parser.parse(text=path.read_text(encoding="utf-8"))
        if not isinstance(tree, dict) or not tree:
            errors.append(f"{path}: empty parse result")
    except Exception as exc:  # report every file, then fail once
        errors.append(f"{path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
for e in errors:
    print(f"pycep: {e}", file=sys.stderr)
print(f"pycep: {len(files)} bicep files, {len(files) - len(errors)} parsed, {len(errors)} parse errors")
if not files or errors:
    sys.exit(1)
EOF

# --- 2. checkov in its own virtual environment (installed once, cached) ------------------------------
install_log="$(mktemp)"
install_checkov() {
    rm -rf "$CHECKOV_VENV"
    "$CHECKOV_PYTHON" -m venv "$CHECKOV_VENV" &&
        "$CHECKOV_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
            "checkov==$CHECKOV_VERSION" >"$install_log" 2>&1
}
if [ ! -f "$STAMP" ] || [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
    echo "infra-check: installing checkov==$CHECKOV_VERSION into $CHECKOV_VENV (once; cached afterwards)"
    if ! install_checkov; then
        echo "infra-check: checkov install failed; retrying once" >&2
        tail -n 20 "$install_log" >&2
        sleep 5
        if ! install_checkov; then
            tail -n 40 "$install_log" >&2
            rm -f "$install_log"
            echo "infra-check: could not install checkov==$CHECKOV_VERSION" >&2
            exit 1
        fi
    fi
    touch "$STAMP"
fi
rm -f "$install_log"

report="$(mktemp)"
errlog="$(mktemp)"
trap 'rm -f "$report" "$errlog"' EXIT
# Offline and quiet: no platform download, no guideline-mapping fetch, no package update check.
export BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE
set +e
"$CHECKOV_VENV/bin/checkov" -d infra --framework bicep --skip-download --quiet --compact --output json \
    >"$report" 2>"$errlog"
rc=$?
set -e
if [ ! -s "$report" ]; then
    echo "checkov: no JSON report (exit $rc)" >&2
    cat "$errlog" >&2
    exit 1
fi
json="$report"

"$PY" - "$json" <<'EOF'
import json
import sys

data = json.load(open(sys.argv[1], encoding="utf-8"))
reports = data if isinstance(data, list) else [data]
totals = {"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0, "resource_count": 0}
failed, parse_errors = [], []
for rep in reports:
    summary = rep.get("summary", rep)
    for key in totals:
        totals[key] += int(summary.get(key, 0) or 0)
    results = rep.get("results", {})
    failed += results.get("failed_checks", [])
    parse_errors += results.get("parsing_errors", [])
for c in failed:
    print(f"checkov: FAILED {c.get('check_id')} {c.get('check_name')} -- {c.get('file_path')}:"
          f"{c.get('file_line_range')} {c.get('resource')}", file=sys.stderr)
for p in parse_errors:
    print(f"checkov: PARSE ERROR {p}", file=sys.stderr)
print(f"checkov: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped, "
      f"{totals['parsing_errors']} parse errors ({totals['resource_count']} resources)")
if totals["failed"] or totals["parsing_errors"] or parse_errors or failed or totals["resource_count"] == 0:
    sys.exit(1)
EOF
