// Custom role for access-policy vaults: exactly read the vault and write its access policies (add or remove
// entries). Never Key Vault Contributor, which could also switch the vault's permission model or network rules.
// Role definitions are tenant-wide objects; this one is created in the deployment's subscription and assignable
// at the target scopes.
targetScope = 'subscription'

@description('Display name of the custom role (unique in the tenant).')
param roleName string

@description('Scopes where the role may be assigned (subscription and resource group ids).')
param assignableScopes array

resource accessPolicyWriter 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, roleName)
  properties: {
    roleName: roleName
    description: 'kv-remediate: read Key Vault vaults and add or remove access-policy entries; nothing else.'
    type: 'customRole'
    permissions: [
      {
        actions: [
          'Microsoft.KeyVault/vaults/read'
          'Microsoft.KeyVault/vaults/accessPolicies/write'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: assignableScopes
  }
}

output roleDefinitionName string = accessPolicyWriter.name
output roleDefinitionId string = accessPolicyWriter.id
