// Apply mode: the function identity's writer roles on ONE Key Vault (deployed with scope: the vault's resource
// group; the assignments themselves are scoped to the vault, never to its resource group or subscription), so
// whatever the function's code does, Azure refuses any write outside the vaults listed in targetVaultIds:
// - Role Based Access Control Administrator with the ABAC condition built in main.bicep (only the grantable Key
//   Vault data roles, only the allowed principal types, never the function's own principal);
// - the custom access-policy writer role (Microsoft.KeyVault/vaults/read + vaults/accessPolicies/write only).
// Both are assigned whatever the vault's permission model, so a vault migrated between access policies and RBAC
// keeps working; on an RBAC vault access-policy entries have no effect, and on an access-policy vault data-role
// assignments have none.
targetScope = 'resourceGroup'

@description('Name of the Key Vault (in this resource group) the identity may fix.')
param vaultName string

@description('Object (principal) id of the function identity.')
param principalId string

@description('ABAC condition (version 2.0) for the Role Based Access Control Administrator assignment.')
param rbacAdminCondition string

@description('Name (GUID) of the access-policy writer custom role definition.')
param accessPolicyRoleName string

var rbacAdministrator = 'f58310d9-a9f6-439a-9e8d-f62e7b41a168'

resource vault 'Microsoft.KeyVault/vaults@2026-02-01' existing = {
  name: vaultName
}

resource rbacAdminAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, rbacAdministrator)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', rbacAdministrator)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'kv-remediate apply mode: on this vault only, assign and remove only Key Vault data roles, never for itself'
    condition: rbacAdminCondition
    conditionVersion: '2.0'
  }
}

resource accessPolicyAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, 'kv-remediate-access-policy-writer')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', accessPolicyRoleName)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'kv-remediate apply mode: add or remove access-policy entries on this vault only'
  }
}
