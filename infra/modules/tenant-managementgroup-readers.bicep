// A resource-group deployment cannot target a management group directly (an ARM rule); it can target the tenant,
// which can target management groups (the documented pattern, Azure/bicep discussion #13612). This module is that
// hop and nothing else: one Reader assignment per named management group.
targetScope = 'tenant'

@description('Names (ids) of the management groups the function identity reads.')
param managementGroupNames array

@description('Object (principal) id of the function identity.')
param principalId string

module readers 'target-managementgroup-reader.bicep' = [for (name, i) in managementGroupNames: {
  name: take('kvrem-mg-reader-${i}-${uniqueString(name)}', 64)
  scope: managementGroup(name)
  params: {
    principalId: principalId
  }
}]
