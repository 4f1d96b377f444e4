// Log Alerts V2 rule over the Key Vault audit logs (AZKVAuditLogs) for denied requests, split by the dimensions the
// function needs as evidence, and the action group whose webhook posts the alert to POST /api/alerts.

@description('Azure region of the alert rule (the action group is global).')
param location string

@description('Name prefix for the rule and the action group.')
param namePrefix string

@description('Resource id of the Log Analytics workspace with the Key Vault audit logs.')
param workspaceId string

@description('Name of the function app (in this resource group) that receives the alerts.')
param functionAppName string

@description('Alert severity (0 critical .. 4 verbose).')
@minValue(0)
@maxValue(4)
param severity int = 2

@description('How often the rule runs; the rule looks back over the same window.')
@allowed([
  'PT5M'
  'PT10M'
  'PT15M'
  'PT30M'
  'PT1H'
])
param evaluationFrequency string = 'PT5M'

@description('Use the secure webhook (Entra ID token) in addition to the function key.')
param useAadAuth bool = false

@description('Secure webhook: object id of the app registration that protects the webhook.')
param aadObjectId string = ''

@description('Secure webhook: application id URI of that app registration (the token audience).')
param aadIdentifierUri string = ''

@description('Secure webhook: tenant id of that app registration.')
param aadTenantId string = tenant().tenantId

@description('Tags for every resource.')
param tags object = {}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

// 403 (denied), 429 (throttled) and 401 other than the normal first-call challenge (OperationName Authentication).
// One row per caller, app, vault, operation, object and status: each combination fires its own alert and its values
// arrive in the payload's dimensions. The dimension names are the column names kv-remediate's intake reads from
// audit rows (CallerObjectId, AppId, ResourceId, OperationName, Id, HttpStatusCode), so dimensions and fetched rows
// are parsed alike. The oid claim has a short and a long form depending on the token; v2 tokens carry the client
// application in azp instead of appid.
var denialQuery = '''
AZKVAuditLogs
| where HttpStatusCode in (403, 429) or (HttpStatusCode == 401 and OperationName != "Authentication")
| extend CallerObjectId = coalesce(tostring(Identity.claim.oid), tostring(Identity.claim["http://schemas.microsoft.com/identity/claims/objectidentifier"]))
| extend AppId = coalesce(tostring(Identity.claim.appid), tostring(Identity.claim.azp))
| extend ResourceId = tolower(_ResourceId)
| extend ObjectUri = tostring(split(coalesce(Id, RequestUri), "?")[0])
| summarize Denials = count() by CallerObjectId, AppId, ResourceId, OperationName, Id = ObjectUri, HttpStatusCode
'''

// The webhook carries a key of the `alerts` function only, never a host key (valid for every function, including
// /api/remediate and /api/diagnose): whoever reads the action group can call /api/alerts and nothing else.
// ARM "Web Apps - List Function Keys": POST {site id}/functions/{functionName}/listkeys
// (https://learn.microsoft.com/rest/api/appservice/web-apps/list-function-keys). The documented response type is a
// StringDictionary, but the service answers with the keys at the top level, e.g. {"default": "<key>"}
// (https://github.com/Azure/azure-rest-api-specs/issues/12889), hence `.default`. The function must exist (code
// published) or the call is a 404: see "First deployment" in infra/README.md.
// The function's name (remediate/app/http.py: @bp.function_name("alerts")), which is also its route.
var alertsFunctionName = 'alerts'
var alertsFunctionKey = listKeys('${functionApp.id}/functions/${alertsFunctionName}', '2024-04-01').default

var webhookBase = {
  name: 'kv-remediate-alerts'
  serviceUri: 'https://${functionApp.properties.defaultHostName}/api/alerts?code=${alertsFunctionKey}'
  useCommonAlertSchema: true
}

var webhookAad = useAadAuth ? {
  useAadAuth: true
  objectId: aadObjectId
  identifierUri: aadIdentifierUri
  tenantId: aadTenantId
} : {
  useAadAuth: false
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-ag'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'kvremediate'
    enabled: true
    webhookReceivers: [
      union(webhookBase, webhookAad)
    ]
  }
}

resource denialRule 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-kv-denials'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'kv-remediate: Key Vault requests denied (403/429/401)'
    description: 'Key Vault data-plane requests refused with 403, 429 or 401 (not the Authentication challenge); posts each principal, app, vault, operation and object to kv-remediate.'
    severity: severity
    enabled: true
    scopes: [
      workspaceId
    ]
    evaluationFrequency: evaluationFrequency
    windowSize: evaluationFrequency
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: denialQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'CallerObjectId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'AppId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'ResourceId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'OperationName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'Id'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'HttpStatusCode'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
      customProperties: {
        source: 'kv-remediate'
      }
    }
  }
}

output actionGroupId string = actionGroup.id
output alertRuleId string = denialRule.id
