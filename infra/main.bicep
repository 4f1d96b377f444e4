// kv-remediate: one resource-group deployment of the function app, its least-privilege identity, the Key Vault
// audit alert rule and the action group that calls the function. See infra/README.md.
targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------------------------

@description('Azure region for the function app and its resources (must offer Flex Consumption).')
param location string = resourceGroup().location

@description('Short lowercase prefix for resource names (letters and digits).')
@minLength(3)
@maxLength(9)
param namePrefix string = 'kvrem'

@description('Apply mode: also grant the roles that let the function fix denials (RBAC administrator restricted by an ABAC condition, access-policy writer). The policy file still decides what is applied.')
param applyMode bool = false

@description('Apply mode: resource ids of the Key Vaults the function may fix. The writer roles (RBAC administrator with the ABAC condition, access-policy writer) are assigned on each of these vaults and nowhere else, never on a subscription or resource group. Empty: apply mode grants nothing.')
param targetVaultIds array = []

@description('Key Vault data roles the function may assign in apply mode; enforced by the ABAC condition. Narrow it to what your policy grants. Only Key Vault data roles are accepted (Key Vault Administrator, 00482a5a-..., only for policies with allow_privileged).')
@minLength(1)
@allowed([
  '21090545-7ca7-4776-b22c-e363652d74d2' // Key Vault Reader
  '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
  'b86a8fe4-44ce-4948-aee5-eccb2c155cd7' // Key Vault Secrets Officer
  '12338af0-0e69-4776-bea7-57ae8d297424' // Key Vault Crypto User
  '14b46e9e-c2b7-41b4-b07b-48a6ebf60603' // Key Vault Crypto Officer
  'e147488a-f6f5-4113-8e2d-b22465e65bf6' // Key Vault Crypto Service Encryption User
  '08bbd89e-9f13-488c-ac41-acfcb10c90ab' // Key Vault Crypto Service Release User
  'db79e9a7-68ee-4b58-9aeb-b90e7c24fcba' // Key Vault Certificate User
  'a4417e6f-fecd-4de8-b567-7b0420556985' // Key Vault Certificates Officer
  '00482a5a-887f-4fb3-b363-3b7fe8e74483' // Key Vault Administrator (privileged)
])
param grantableRoleIds array = [
  '21090545-7ca7-4776-b22c-e363652d74d2' // Key Vault Reader
  '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
  'b86a8fe4-44ce-4948-aee5-eccb2c155cd7' // Key Vault Secrets Officer
  '12338af0-0e69-4776-bea7-57ae8d297424' // Key Vault Crypto User
  '14b46e9e-c2b7-41b4-b07b-48a6ebf60603' // Key Vault Crypto Officer
  'e147488a-f6f5-4113-8e2d-b22465e65bf6' // Key Vault Crypto Service Encryption User
  '08bbd89e-9f13-488c-ac41-acfcb10c90ab' // Key Vault Crypto Service Release User
  'db79e9a7-68ee-4b58-9aeb-b90e7c24fcba' // Key Vault Certificate User
  'a4417e6f-fecd-4de8-b567-7b0420556985' // Key Vault Certificates Officer
]

@description('Principal types the function may grant data roles to in apply mode; enforced by the ABAC condition. ServicePrincipal (apps and managed identities) by default; add User only if your policy grants to users (principal_types). Never Group.')
@minLength(1)
@allowed([
  'ServicePrincipal'
  'User'
])
param grantablePrincipalTypes array = [
  'ServicePrincipal'
]

@description('Managed HSMs (resource ids) the function diagnoses: Reader on each HSM resource, so ARM describes it even outside the target subscriptions. Its local roles are on the HSM data plane, which Bicep cannot assign: an HSM administrator runs the commands in output hsmLocalRoleCommands (Managed HSM Crypto Auditor at / to diagnose; in apply mode also the apply role). Empty: no HSM.')
param managedHsmIds array = []

@description('Apply mode, Managed HSMs: the local scope of the Managed HSM Policy Administrator assignment in hsmLocalRoleCommands. / lets the function define its least-privilege custom roles (definitions live at / only); /keys is for built-in-role plans with custom roles defined by a person beforehand. Either way the role can make itself Administrator, which is why HSM plans are approval-only by default (policy hsm_unattended).')
@allowed([
  '/'
  '/keys'
])
param hsmApplyScope string = '/'

@description('Subscriptions whose vaults the function reads (Reader) to diagnose denials. Writing is per vault (targetVaultIds). Default: this subscription.')
param targetSubscriptionIds array = [
  subscription().subscriptionId
]

@description('Resource groups the function reads (Reader) instead of (or besides) whole subscriptions: [{ "subscriptionId": "...", "resourceGroupName": "..." }].')
param targetResourceGroups array = []

@description('Management groups (names, e.g. the tenant root group id) the function reads (Reader), inherited by every subscription below them now and later: the alternative to listing subscriptions. Set: AZURE_SUBSCRIPTION_IDS is left empty and Azure Resource Graph searches every subscription the identity can read. Deploying it needs Microsoft.Resources/deployments/write at the tenant root (see infra/README.md).')
param readerManagementGroupNames array = []

@description('Resource id of an existing Log Analytics workspace that holds (or will hold) the Key Vault audit logs. Empty: the workspace this deployment creates.')
param auditWorkspaceId string = ''

@description('Resource ids of Key Vaults whose AuditEvent logs are sent to the audit workspace (resource-specific table AZKVAuditLogs).')
param diagnosticVaultIds array = []

@description('Deploy the alert rule and the action group. The webhook URL needs the function key (listKeys), which exists once the app has started: on a first deployment, set false, publish the code, then deploy again with true.')
param deployAlerting bool = true

@description('Region of the alert rule (the region of the audit workspace when that is elsewhere).')
param alertLocation string = location

@description('Alert severity (0 critical .. 4 verbose).')
@minValue(0)
@maxValue(4)
param alertSeverity int = 2

@description('How often the alert rule runs (and the window it looks back over).')
@allowed([
  'PT5M'
  'PT10M'
  'PT15M'
  'PT30M'
  'PT1H'
])
param alertEvaluationFrequency string = 'PT5M'

@description('Secure webhook: application id URI (token audience) of the Entra ID app registration that protects /api/alerts. Empty: function key only.')
param webhookAadIdentifierUri string = ''

@description('Secure webhook: object id of that app registration.')
param webhookAadObjectId string = ''

@description('Secure webhook and apply over HTTP: tenant id (a GUID, not a domain) of the app registration(s).')
param webhookAadTenantId string = tenant().tenantId

@description('Apply over HTTP: application id URI (token audience) of the app registration whose app role KvRemediate.Apply lets a caller apply with POST /api/remediate. Empty: webhookAadIdentifierUri (one registration for both); both empty: /api/remediate never applies.')
param remediateApiAadIdentifierUri string = ''

@description('Remediation policy (YAML or JSON content) for KV_REMEDIATE_POLICY. Empty: the defaults (suggest only).')
param remediationPolicy string = ''

@description('Dedupe window for identical denials (ISO 8601 duration), KV_REMEDIATE_DEDUPE_WINDOW.')
param dedupeWindow string = 'PT10M'

@description('Teams Workflows, Slack or other webhook URL for findings and approval requests, KV_REMEDIATE_NOTIFY_URL. Empty: no notification.')
@secure()
param notifyUrl string = ''

@description('The payload posted to notifyUrl, KV_REMEDIATE_NOTIFY_KIND. Empty: read from the URL host.')
@allowed([
  ''
  'teams'
  'slack'
  'webhook'
])
param notifyKind string = ''

@description('The Slack app signing secret, KV_REMEDIATE_SLACK_SIGNING_SECRET: /api/slack/actions verifies every request with it. Empty: Slack clicks are refused.')
@secure()
param slackSigningSecret string = ''

@description('Slack users who may approve, each mapped to an Entra ID object id: SLACKUSERID=OBJECT-ID,... (KV_REMEDIATE_SLACK_APPROVERS).')
param slackApprovers string = ''

@description('Optional Slack team id whose clicks are read, KV_REMEDIATE_SLACK_TEAM.')
param slackTeam string = ''

@description('Key of the findings page form tokens (its CSRF protection), KV_REMEDIATE_PAGE_KEY: at least 32 characters, one for every instance. Default: a new random value at each deployment (a page opened before a deployment must be reloaded before its Approve or Reject is accepted).')
// checkov:skip=CKV_AZURE_131: the default is newGuid(), a new random value at each deployment, not a hardcoded secret (Bicep allows newGuid() only as a parameter default)
@secure()
@minLength(32)
param pageKey string = newGuid()

@description('Storage redundancy.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSku string = 'Standard_GRS'

@description('Flex Consumption: most instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption: memory per instance (MB).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Zone-redundant Flex Consumption plan (region must support it; keeps always-ready instances).')
param zoneRedundant bool = false

@description('Days the Log Analytics workspace keeps data.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('Tags for every resource.')
param tags object = {}

// ---------------------------------------------------------------------------------------------------------------
// Names and derived values
// ---------------------------------------------------------------------------------------------------------------

var suffix = uniqueString(resourceGroup().id, namePrefix)
var identityName = '${namePrefix}-id-${suffix}'
var workspaceName = '${namePrefix}-log-${suffix}'
var appInsightsName = '${namePrefix}-appi-${suffix}'
var planName = '${namePrefix}-plan-${suffix}'
var functionAppName = '${namePrefix}-func-${suffix}'
var storageAccountName = take(toLower('st${namePrefix}${suffix}'), 24)
var deploymentContainerName = 'app-package'

var ownWorkspaceId = resourceId('Microsoft.OperationalInsights/workspaces', workspaceName)
var auditWorkspaceResourceId = empty(auditWorkspaceId) ? ownWorkspaceId : auditWorkspaceId
var auditWorkspaceParts = split(auditWorkspaceResourceId, '/')

var targetResourceGroupSubscriptionIds = [for rg in targetResourceGroups: rg.subscriptionId]
var targetVaultSubscriptionIds = [for vaultId in targetVaultIds: split(vaultId, '/')[2]]
var allTargetSubscriptionIds = union(targetSubscriptionIds, targetResourceGroupSubscriptionIds, targetVaultSubscriptionIds)
// Writer roles only in apply mode, and only on these vaults (one module per vault, scoped to the vault itself).
var writerVaultIds = applyMode ? targetVaultIds : []
// The custom role must be assignable where the vaults are; custom role assignable scopes are subscriptions,
// resource groups or management groups, so the vaults' resource groups (the assignment itself is on the vault).
var targetVaultResourceGroupScopes = [for vaultId in targetVaultIds: '/subscriptions/${split(vaultId, '/')[2]}/resourceGroups/${split(vaultId, '/')[4]}']

// Managed HSM names (the last segment of each id), for the local-role commands an HSM administrator runs.
var hsmNames = [for hsmId in managedHsmIds: last(split(hsmId, '/'))]

var useWebhookAad = !empty(webhookAadIdentifierUri)
var remediateApiAudience = empty(remediateApiAadIdentifierUri) ? webhookAadIdentifierUri : remediateApiAadIdentifierUri

// ABAC condition for Role Based Access Control Administrator, from Microsoft's "Constrain roles and principal types"
// template (https://learn.microsoft.com/azure/role-based-access-control/delegate-role-assignments-examples) plus a
// principal exclusion. Creating a role assignment is allowed only for the grantable Key Vault data roles, only to
// the grantable principal types (never Group), and never to the function's own principal; deleting one only when
// it is such an assignment. The attribute Microsoft.Authorization/roleAssignments:PrincipalId (GUID, sources
// Request and Resource) takes GuidEquals, GuidNotEquals, ForAnyOfAnyValues:GuidEquals or
// ForAnyOfAllValues:GuidNotEquals (https://learn.microsoft.com/azure/role-based-access-control/conditions-authorization-actions-attributes#principal-id);
// ForAnyOfAllValues:GuidNotEquals {self} holds only when the principal differs from every listed id, here the one.
// So the identity can never grant itself or anyone a broader role (Owner, User Access Administrator, Contributor,
// Key Vault Contributor, RBAC administrator), never grant to groups, and never grant itself a data role, whatever
// the function's code does.
var grantableRoleList = join(grantableRoleIds, ', ')
var grantablePrincipalTypeList = '\'${join(grantablePrincipalTypes, '\', \'')}\''
var selfPrincipalId = identity.properties.principalId
var rbacAdminCondition = '((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/write\'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${grantableRoleList}} AND @Request[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {${grantablePrincipalTypeList}} AND @Request[Microsoft.Authorization/roleAssignments:PrincipalId] ForAnyOfAllValues:GuidNotEquals {${selfPrincipalId}})) AND ((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/delete\'})) OR (@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${grantableRoleList}} AND @Resource[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {${grantablePrincipalTypeList}} AND @Resource[Microsoft.Authorization/roleAssignments:PrincipalId] ForAnyOfAllValues:GuidNotEquals {${selfPrincipalId}}))'

var accessPolicyRoleName = 'kv-remediate access-policy writer (${namePrefix}-${suffix})'

var remediateAppSettings = [
  {
    // Optional for the function: a filter for Resource Graph and the list its ARM fallback searches. Empty when
    // management groups are read, so Resource Graph searches every subscription below them.
    name: 'AZURE_SUBSCRIPTION_IDS'
    value: empty(readerManagementGroupNames) ? join(allTargetSubscriptionIds, ',') : ''
  }
  {
    name: 'KV_REMEDIATE_POLICY'
    value: remediationPolicy
  }
  {
    name: 'KV_REMEDIATE_DEDUPE_WINDOW'
    value: dedupeWindow
  }
  {
    name: 'KV_REMEDIATE_NOTIFY_URL'
    value: notifyUrl
  }
  {
    name: 'KV_REMEDIATE_NOTIFY_KIND'
    value: notifyKind
  }
  {
    name: 'KV_REMEDIATE_SLACK_SIGNING_SECRET'
    value: slackSigningSecret
  }
  {
    name: 'KV_REMEDIATE_SLACK_APPROVERS'
    value: slackApprovers
  }
  {
    name: 'KV_REMEDIATE_SLACK_TEAM'
    value: slackTeam
  }
  {
    name: 'KV_REMEDIATE_PAGE_KEY'
    value: pageKey
  }
  {
    name: 'KV_REMEDIATE_WEBHOOK_AUDIENCE'
    value: useWebhookAad ? webhookAadIdentifierUri : ''
  }
  {
    name: 'KV_REMEDIATE_WEBHOOK_TENANT'
    value: useWebhookAad ? webhookAadTenantId : ''
  }
  {
    name: 'KV_REMEDIATE_API_AUDIENCE'
    value: remediateApiAudience
  }
  {
    name: 'KV_REMEDIATE_API_TENANT'
    value: empty(remediateApiAudience) ? '' : webhookAadTenantId
  }
  {
    // The guard's own copy of what the ABAC condition enforces: never grant to the app's own identity.
    name: 'KV_REMEDIATE_SELF_OBJECT_ID'
    value: identity.properties.principalId
  }
]

// ---------------------------------------------------------------------------------------------------------------
// Identity, monitoring, storage, function app
// ---------------------------------------------------------------------------------------------------------------

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'kvrem-monitoring'
  params: {
    location: location
    workspaceName: workspaceName
    appInsightsName: appInsightsName
    retentionInDays: logRetentionDays
    tags: tags
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'kvrem-workbook'
  params: {
    location: location
    appInsightsId: monitoring.outputs.appInsightsId
    displayName: '${namePrefix} kv-remediate'
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'kvrem-storage'
  params: {
    location: location
    storageAccountName: storageAccountName
    deploymentContainerName: deploymentContainerName
    skuName: storageSku
    tags: tags
  }
}

module appRoles 'modules/app-roles.bicep' = {
  name: 'kvrem-app-roles'
  params: {
    principalId: identity.properties.principalId
    storageAccountName: storage.outputs.storageAccountName
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'kvrem-functionapp'
  params: {
    location: location
    planName: planName
    appName: functionAppName
    identityId: identity.id
    identityClientId: identity.properties.clientId
    storageAccountName: storage.outputs.storageAccountName
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    extraAppSettings: remediateAppSettings
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    zoneRedundant: zoneRedundant
    tags: tags
  }
  dependsOn: [
    // The host reads its storage with the identity: grant first, then start the app.
    appRoles
  ]
}

// ---------------------------------------------------------------------------------------------------------------
// Least-privilege roles of the function identity outside its own resource group
// ---------------------------------------------------------------------------------------------------------------

module workspaceReader 'modules/workspace-reader.bicep' = {
  name: 'kvrem-workspace-reader'
  scope: resourceGroup(auditWorkspaceParts[2], auditWorkspaceParts[4])
  params: {
    principalId: identity.properties.principalId
    workspaceName: last(auditWorkspaceParts)
  }
  dependsOn: [
    monitoring
  ]
}

// Reading (to find and diagnose vaults) may be broad: Reader on each target subscription / resource group.
module subscriptionReaders 'modules/target-subscription-reader.bicep' = [for (subscriptionId, i) in targetSubscriptionIds: {
  name: take('kvrem-sub-reader-${i}-${uniqueString(subscriptionId)}', 64)
  scope: subscription(subscriptionId)
  params: {
    principalId: identity.properties.principalId
  }
}]

// Or Reader at management groups: every subscription below them, without a list (through a tenant-scope hop).
module managementGroupReaders 'modules/tenant-managementgroup-readers.bicep' = if (!empty(readerManagementGroupNames)) {
  name: take('kvrem-mg-readers-${uniqueString(resourceGroup().id)}', 64)
  scope: tenant()
  params: {
    managementGroupNames: readerManagementGroupNames
    principalId: identity.properties.principalId
  }
}

module resourceGroupReaders 'modules/target-resourcegroup-reader.bicep' = [for (rg, i) in targetResourceGroups: {
  name: take('kvrem-rg-reader-${i}-${uniqueString(rg.subscriptionId, rg.resourceGroupName)}', 64)
  scope: resourceGroup(rg.subscriptionId, rg.resourceGroupName)
  params: {
    principalId: identity.properties.principalId
  }
}]

// Managed HSMs: Reader on each HSM resource (ARM); the local roles are data plane (output hsmLocalRoleCommands).
module hsmReaders 'modules/target-hsm-reader.bicep' = [for (hsmId, i) in managedHsmIds: {
  name: take('kvrem-hsm-reader-${i}-${uniqueString(hsmId)}', 64)
  scope: resourceGroup(split(hsmId, '/')[2], split(hsmId, '/')[4])
  params: {
    hsmName: last(split(hsmId, '/'))
    principalId: identity.properties.principalId
  }
}]

// Writing is per vault, apply mode only: the access-policy writer custom role, and both writer roles assigned on
// each vault in targetVaultIds (never at a subscription or resource group), so a bug in the code guard cannot
// turn into a subscription-wide grant.
module accessPolicyRole 'modules/accesspolicy-role.bicep' = if (applyMode) {
  name: 'kvrem-accesspolicy-role'
  scope: subscription()
  params: {
    roleName: accessPolicyRoleName
    assignableScopes: union([
      subscription().id
    ], targetVaultResourceGroupScopes)
  }
}

module vaultWriters 'modules/target-vault-roles.bicep' = [for (vaultId, i) in writerVaultIds: {
  name: take('kvrem-kv-writer-${i}-${uniqueString(vaultId)}', 64)
  scope: resourceGroup(split(vaultId, '/')[2], split(vaultId, '/')[4])
  params: {
    vaultName: last(split(vaultId, '/'))
    principalId: identity.properties.principalId
    rbacAdminCondition: rbacAdminCondition
    accessPolicyRoleName: applyMode ? accessPolicyRole.outputs.roleDefinitionName : ''
  }
}]

// ---------------------------------------------------------------------------------------------------------------
// Key Vault audit logs, alert rule and action group
// ---------------------------------------------------------------------------------------------------------------

module vaultDiagnostics 'modules/kv-diagnostics.bicep' = [for (vaultId, i) in diagnosticVaultIds: {
  name: take('kvrem-kv-diag-${i}-${uniqueString(vaultId)}', 64)
  scope: resourceGroup(split(vaultId, '/')[2], split(vaultId, '/')[4])
  params: {
    vaultName: last(split(vaultId, '/'))
    workspaceId: auditWorkspaceResourceId
  }
  dependsOn: [
    monitoring
  ]
}]

module alerting 'modules/alerting.bicep' = if (deployAlerting) {
  name: 'kvrem-alerting'
  params: {
    location: alertLocation
    namePrefix: '${namePrefix}-${suffix}'
    workspaceId: auditWorkspaceResourceId
    functionAppName: functionApp.outputs.appName
    severity: alertSeverity
    evaluationFrequency: alertEvaluationFrequency
    useAadAuth: useWebhookAad
    aadObjectId: webhookAadObjectId
    aadIdentifierUri: webhookAadIdentifierUri
    aadTenantId: webhookAadTenantId
    tags: tags
  }
  dependsOn: [
    monitoring
  ]
}

// ---------------------------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------------------------

output functionUrl string = 'https://${functionApp.outputs.defaultHostName}'
output functionAppName string = functionApp.outputs.appName
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
output alertRuleId string = deployAlerting ? alerting.outputs.alertRuleId : ''
output actionGroupId string = deployAlerting ? alerting.outputs.actionGroupId : ''
output auditWorkspaceId string = auditWorkspaceResourceId
output workbookId string = workbook.outputs.workbookId
output storageAccountName string = storage.outputs.storageAccountName
// The HSM's local roles, for an HSM administrator to run (Bicep cannot assign Managed HSM local roles): Crypto Auditor
// at / to diagnose (reads role assignments and definitions); in apply mode only, Policy Administrator to apply.
output hsmLocalRoleCommands array = [for hsmName in hsmNames: concat([
  'az keyvault role assignment create --hsm-name ${hsmName} --role "Managed HSM Crypto Auditor" --scope / --assignee-object-id ${identity.properties.principalId} --assignee-principal-type ServicePrincipal'
], applyMode ? [
  'az keyvault role assignment create --hsm-name ${hsmName} --role "Managed HSM Policy Administrator" --scope ${hsmApplyScope} --assignee-object-id ${identity.properties.principalId} --assignee-principal-type ServicePrincipal'
] : [])]
output accessPolicyRoleDefinitionId string = applyMode ? accessPolicyRole.outputs.roleDefinitionId : ''
