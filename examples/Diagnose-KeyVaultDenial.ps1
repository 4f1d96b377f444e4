<#
.SYNOPSIS
    Azure Automation runbook: ask kv-remediate why a Key Vault request was denied and print the fix.

.DESCRIPTION
    Calls POST /api/diagnose of the kv-remediate function app with a function key and prints, per finding, the
    cause, the explanation and the least-privilege fix (an `az` command, or the advice when no grant is right).
    Nothing is changed: the runbook only reads the diagnosis.

    Store the function key in an Automation variable (encrypted) named 'KvRemediateFunctionKey', or pass it.
    Get it with:  az functionapp function keys list -g <rg> -n <app> --function-name diagnose

.PARAMETER FunctionAppUrl
    https://<app>.azurewebsites.net (or http://127.0.0.1:7071 for `kv-remediate serve`).
.PARAMETER PrincipalId
    Object id of the caller that was denied.
.PARAMETER Vault
    Vault name or resource id.
.PARAMETER Operation
    Key Vault operation (diagnostic log OperationName), e.g. SecretGet, KeyDecrypt.
.PARAMETER Object
    Optional KIND/NAME, e.g. secrets/db-password.
.PARAMETER ErrorText
    Instead of the four fields: the error text or JSON an SDK, the CLI or the vault returned.

.EXAMPLE
    .\Diagnose-KeyVaultDenial.ps1 -FunctionAppUrl https://kvrem-func.azurewebsites.net `
        -PrincipalId f5cc68ab-42e1-5ea1-9f30-8c0bb96e5879 -Vault kv-payments -Operation SecretGet -Object secrets/db-password
#>
param(
    [Parameter(Mandatory = $true)] [string] $FunctionAppUrl,
    [string] $PrincipalId,
    [string] $Vault,
    [string] $Operation,
    [string] $Object,
    [string] $ErrorText,
    [string] $FunctionKey
)

$ErrorActionPreference = 'Stop'

if (-not $FunctionKey) {
    try { $FunctionKey = Get-AutomationVariable -Name 'KvRemediateFunctionKey' } catch { $FunctionKey = $env:KV_REMEDIATE_FUNCTION_KEY }
}
if (-not $FunctionKey) { throw "No function key: set the Automation variable 'KvRemediateFunctionKey' or pass -FunctionKey" }

if ($ErrorText) {
    $body = $ErrorText
    $contentType = 'text/plain; charset=utf-8'
} else {
    if (-not ($PrincipalId -and $Vault -and $Operation)) { throw 'Give -PrincipalId, -Vault and -Operation (or -ErrorText)' }
    $request = [ordered]@{ principal_id = $PrincipalId; vault = $Vault; operation = $Operation }
    if ($Object) { $request.object = $Object }
    $body = $request | ConvertTo-Json -Compress
    $contentType = 'application/json'
}

$uri = "$($FunctionAppUrl.TrimEnd('/'))/api/diagnose"
try {
    $diagnosis = Invoke-RestMethod -Method Post -Uri $uri -Body $body -ContentType $contentType `
        -Headers @{ 'x-functions-key' = $FunctionKey }
} catch {
    $detail = $_.ErrorDetails.Message
    if ($detail) {
        $err = ($detail | ConvertFrom-Json).error
        throw "kv-remediate refused the request ($($err.code)): $($err.message)"
    }
    throw
}

foreach ($finding in $diagnosis.findings) {
    $denial = $finding.denial
    $what = if ($denial.object) { "$($denial.object.kind)/$($denial.object.name)" } else { '' }
    Write-Output "Cause:   $($finding.cause)  ($($denial.operation) on $($denial.vault.name) $what)"
    Write-Output "Why:     $($finding.explanation)"
    if ($finding.plan) {
        Write-Output "Fix:     $($finding.plan.commands.az)"
    } else {
        foreach ($advice in $finding.advice) { Write-Output "Advice:  $advice" }
    }
    Write-Output ''
}
Write-Output "$($diagnosis.findings.Count) finding(s); $($diagnosis.stats.arm_requests) Azure request(s) in $($diagnosis.stats.elapsed_ms) ms"
