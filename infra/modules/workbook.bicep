// Azure Monitor workbook over the app's Application Insights: findings by cause over time, top denied principals and
// vaults, grants in force and their expiry, refusals by policy rule, time to diagnose. The queries read what
// remediate/telemetry.py sends (customMetrics kv_remediate.*, dependencies "kv-remediate grant"/"kv-remediate revoke").

@description('Azure region of the workbook.')
param location string

@description('Resource id of the Application Insights component the workbook reads.')
param appInsightsId string

@description('Display name of the workbook in the portal.')
param displayName string = 'kv-remediate'

@description('Tags for every resource.')
param tags object = {}

// The workbook's name must be a GUID: stable per component, so redeploying updates the same workbook.
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(appInsightsId, 'kv-remediate-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: loadTextContent('workbook.json')
  }
}

output workbookId string = workbook.id
