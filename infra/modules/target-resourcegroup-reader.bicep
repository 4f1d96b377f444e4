// The function identity's read access on one target resource group (deployed with scope: resourceGroup(sub, name)):
// Reader only (vaults, role assignments, role definitions, deny assignments), so it can find the vault a denial
// names and diagnose it. Nothing here can write: the writer roles are assigned per vault (target-vault-roles.bicep).
targetScope = 'resourceGroup'

@description('Object (principal) id of the function identity.')
param principalId string

var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

resource readerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, reader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'kv-remediate: read vaults, role and deny assignments'
  }
}
