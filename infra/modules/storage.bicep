// Storage for the function app: host storage, the deployment package container, the `denials` queue and the
// `claims`, `findings`, `grants`, `approvals` and `vaultindex` tables. Identity-based access only: shared keys are disabled.

@description('Azure region.')
param location string

@description('Storage account name (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param storageAccountName string

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Storage redundancy.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_GRS'

@description('Tags for every resource.')
param tags object = {}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: no virtual network integration is deployed, so the Flex Consumption host reaches this account over its public endpoint and the default network action must stay Allow; access is Entra ID only (shared keys and anonymous blob access are disabled)
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: without virtual network integration and private endpoints the function host needs the public endpoint
  // checkov:skip=CKV_AZURE_43: false positive: the name is a module parameter that checkov cannot resolve; main.bicep builds it as take(toLower('st' + namePrefix + uniqueString(...)), 24), lowercase letters and digits only, and the parameter is limited to 3-24 characters
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Alerts are enqueued here by POST /api/alerts and drained by the queue-triggered worker.
resource denialsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: 'denials'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Dedupe claims across instances (conditional insert per principal, vault, object and operation).
resource claimsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: 'claims'
}

// One record per finding written by the worker.
resource findingsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: 'findings'
}

// Audit of every applied, refused and revoked grant.
resource grantsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: 'grants'
}

// Approval requests waiting for (or decided by) people, one per exact change (approvals/, issue 11).
resource approvalsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: 'approvals'
}

// Where vault names resolved (name -> resource id, 24 h), shared by every instance (store/vault_index.py).
resource vaultIndexTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: 'vaultindex'
}

output storageAccountId string = storage.id
output storageAccountName string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output queueName string = denialsQueue.name
output tableNames array = [
  claimsTable.name
  findingsTable.name
  grantsTable.name
  approvalsTable.name
  vaultIndexTable.name
]
