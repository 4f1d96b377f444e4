// The function identity's ARM read access on one Managed HSM (deployed with scope: the HSM's resource group; the
// assignment itself is scoped to the HSM): Reader only, so managed_hsms.get finds its hsmUri, activation and network
// rules even when the HSM is outside the target subscriptions. The HSM's local roles (Crypto Auditor to diagnose,
// Policy Administrator to apply) live on its data plane, which ARM and Bicep cannot assign (the Microsoft.KeyVault
// resource types are managedHSMs, managedHSMs/keys, keys/versions and privateEndpointConnections only:
// learn.microsoft.com/azure/templates/microsoft.keyvault/allversions): main.bicep outputs the
// az commands an HSM administrator runs (output hsmLocalRoleCommands; infra/README.md, "Managed HSM").
targetScope = 'resourceGroup'

@description('Name of the Managed HSM (in this resource group) the identity diagnoses.')
param hsmName string

@description('Object (principal) id of the function identity.')
param principalId string

var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

resource hsm 'Microsoft.KeyVault/managedHSMs@2024-11-01' existing = {
  name: hsmName
}

resource readerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hsm.id, principalId, reader)
  scope: hsm
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'kv-remediate: read this Managed HSM (hsmUri, activation, network rules)'
  }
}
