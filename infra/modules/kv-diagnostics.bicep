// Key Vault audit logs (category AuditEvent) to a Log Analytics workspace in resource-specific mode, so they land
// in the AZKVAuditLogs table that the alert rule queries. Deployed into the vault's resource group.

@description('Name of the Key Vault in this resource group.')
param vaultName string

@description('Resource id of the Log Analytics workspace that receives the audit logs.')
param workspaceId string

@description('Name of the diagnostic setting.')
param settingName string = 'kv-remediate-audit'

resource vault 'Microsoft.KeyVault/vaults@2026-02-01' existing = {
  name: vaultName
}

resource auditToWorkspace 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: settingName
  scope: vault
  properties: {
    workspaceId: workspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
  }
}

output diagnosticSettingId string = auditToWorkspace.id
