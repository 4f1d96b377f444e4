// The function identity's read access on one management group (deployed with scope: managementGroup(name)):
// Reader only, inherited by every subscription below it now and later, so Azure Resource Graph finds a vault by
// name in any of them without a subscription list. Nothing here can write: the writer roles are assigned per vault
// (target-vault-roles.bicep).
targetScope = 'managementGroup'

@description('Object (principal) id of the function identity.')
param principalId string

var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

resource readerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(managementGroup().id, principalId, reader)
  properties: {
    roleDefinitionId: tenantResourceId('Microsoft.Authorization/roleDefinitions', reader)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'kv-remediate: find vaults (Resource Graph) and read them, their role and deny assignments'
  }
}
