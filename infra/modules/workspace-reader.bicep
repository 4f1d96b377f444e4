// Log Analytics Reader for the function identity on the workspace that holds the Key Vault audit logs, so the
// function can fetch the rows of an alert (linkToSearchResultsAPI) when the alert carries no dimensions.
// Deployed into the workspace's resource group (which may be in another subscription).

@description('Object (principal) id of the function identity.')
param principalId string

@description('Name of the Log Analytics workspace in this resource group.')
param workspaceName string

var logAnalyticsReader = '73c42c96-874c-492b-b04d-ab87d138a893'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, principalId, logAnalyticsReader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', logAnalyticsReader)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'kv-remediate: read Key Vault audit rows for alerts'
  }
}
