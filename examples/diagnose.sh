#!/usr/bin/env bash
# Ask kv-remediate why a Key Vault request was denied and print the fix (POST /api/diagnose with a function key).
#
#   KV_REMEDIATE_URL=https://<app>.azurewebsites.net KV_REMEDIATE_FUNCTION_KEY=... \
#     examples/diagnose.sh <principal-object-id> <vault> <operation> [KIND/NAME]
#   examples/diagnose.sh --error error.txt          # or any text/JSON `kv-remediate parse` accepts
#
# Without KV_REMEDIATE_FUNCTION_KEY the key is read with `az functionapp function keys list` (needs
# KV_REMEDIATE_APP and KV_REMEDIATE_RG). With `kv-remediate serve`, KV_REMEDIATE_URL=http://127.0.0.1:7071 and
# any key works. Needs curl and jq; set KV_REMEDIATE_USE_AZ_REST=1 to call through `az rest` instead of curl.
set -euo pipefail

url="${KV_REMEDIATE_URL:?set KV_REMEDIATE_URL (e.g. https://<app>.azurewebsites.net or http://127.0.0.1:7071)}"
key="${KV_REMEDIATE_FUNCTION_KEY:-}"
if [ -z "$key" ]; then
  key="$(az functionapp function keys list -g "${KV_REMEDIATE_RG:?set KV_REMEDIATE_RG}" \
          -n "${KV_REMEDIATE_APP:?set KV_REMEDIATE_APP}" --function-name diagnose --query default -o tsv)"
fi

if [ "${1:-}" = "--error" ]; then
  body="$(cat "${2:?give the file with the error text}")"
  ctype="text/plain; charset=utf-8"
else
  principal="${1:?principal object id}"; vault="${2:?vault name or id}"; operation="${3:?operation, e.g. SecretGet}"
  body="$(jq -cn --arg p "$principal" --arg v "$vault" --arg o "$operation" --arg obj "${4:-}" \
          '{principal_id: $p, vault: $v, operation: $o} + (if $obj == "" then {} else {object: $obj} end)')"
  ctype="application/json"
fi

endpoint="${url%/}/api/diagnose"
if [ "${KV_REMEDIATE_USE_AZ_REST:-0}" = "1" ]; then
  # az rest adds no token for a URL it does not know (--skip-authorization-header); the function key authorizes.
  answer="$(az rest --method post --url "$endpoint" --skip-authorization-header \
            --headers "x-functions-key=$key" "Content-Type=$ctype" --body "$body")"
else
  answer="$(curl -sS -X POST "$endpoint" -H "x-functions-key: $key" -H "Content-Type: $ctype" \
            --data-binary "$body" -w '\n%{http_code}')"
  status="${answer##*$'\n'}"; answer="${answer%$'\n'*}"
  if [ "$status" != "200" ]; then
    echo "kv-remediate answered $status: $(jq -r '.error | "\(.code): \(.message)"' <<<"$answer" 2>/dev/null || echo "$answer")" >&2
    exit 1
  fi
fi

jq -r '.findings[] |
  "Cause:  \(.cause)  (\(.denial.operation // "?") on \(.denial.vault.name // .denial.vault.resource_id // "?")\(if .denial.object then " \(.denial.object.kind)/\(.denial.object.name)" else "" end))",
  "Why:    \(.explanation)",
  (if .plan then "Fix:    \(.plan.commands.az)" else (.advice[] | "Advice: \(.)") end),
  ""' <<<"$answer"
jq -r '"\(.findings | length) finding(s); \(.stats.arm_requests) Azure request(s) in \(.stats.elapsed_ms) ms"' <<<"$answer"
