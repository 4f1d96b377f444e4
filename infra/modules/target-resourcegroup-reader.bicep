// The function identity's roles on one target resource group (deployed with scope: resourceGroup(sub, name)).
// Always: Reader (vaults, role assignments, role definitions, deny assignments).
// Only in apply mode: Role Based Access Control Administrator restricted by an ABAC condition to the Key Vault data
// roles the policy may grant and to service principals, and the custom role that may add or remove access-policy
// entries (Microsoft.KeyVault/vaults/read and Microsoft.KeyVault/vaults/accessPolicies/write, nothing else).
targetScope = 'resourceGroup'

@description('Object (principal) id of the function identity.')
param principalId string

@description('Grant the apply-mode roles (RBAC administrator with the ABAC condition, access-policy writer).')
param applyMode bool = false

@description('ABAC condition (version 2.0) for the Role Based Access Control Administrator assignment.')
param rbacAdminCondition string

@description('Name (GUID) of the access-policy writer custom role definition; empty when not in apply mode.')
param accessPolicyRoleName string = ''

var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
var rbacAdministrator = 'f58310d9-a9f6-439a-9e8d-f62e7b41a168'

resource readerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, reader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'kv-remediate: read vaults, role and deny assignments'
  }
}

resource rbacAdminAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (applyMode) {
  name: guid(resourceGroup().id, principalId, rbacAdministrator)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', rbacAdministrator)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'kv-remediate apply mode: assign and remove only Key Vault data roles, only for service principals'
    condition: rbacAdminCondition
    conditionVersion: '2.0'
  }
}

resource accessPolicyAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (applyMode) {
  name: guid(resourceGroup().id, principalId, 'kv-remediate-access-policy-writer')
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', accessPolicyRoleName)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'kv-remediate apply mode: add or remove access-policy permissions'
  }
}
