// The kv-remediate function app: Flex Consumption plan (Linux, Python 3.11), the user-assigned managed identity as
// its only identity, identity-based host storage (AzureWebJobsStorage__*) and deployment storage.

@description('Azure region (one that offers Flex Consumption).')
param location string

@description('Flex Consumption plan name.')
param planName string

@description('Function app name (also its host name).')
param appName string

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

@description('Name of the storage account (in this resource group) used for host storage, queue and tables.')
param storageAccountName string

@description('Blob container for the deployment package.')
param deploymentContainerName string

@description('Application Insights connection string.')
param appInsightsConnectionString string

@description('kv-remediate settings as [{ name, value }], added to the platform settings.')
param extraAppSettings array = []

@description('Flex Consumption: most instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption: memory per instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Spread the plan across availability zones (region must support it; adds always-ready instances).')
param zoneRedundant bool = false

@description('Tags for every resource.')
param tags object = {}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy is the zoneRedundant parameter; on Flex Consumption it keeps at least two always-ready instances billed around the clock and is not offered in every region, so it is opt-in
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

// Flex Consumption takes the runtime from functionAppConfig: FUNCTIONS_WORKER_RUNTIME and
// FUNCTIONS_EXTENSION_VERSION must not be set.
var platformAppSettings = [
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storage.name
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: storage.properties.primaryEndpoints.queue
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: storage.properties.primaryEndpoints.table
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsightsConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
  {
    // DefaultAzureCredential picks the user-assigned identity from this setting.
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
]

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: callers are the Azure Monitor action group webhook and runbooks, which cannot present client certificates; they authenticate with a function key and, optionally, an Entra ID token that the app validates
  // checkov:skip=CKV_AZURE_82: Flex Consumption sets the language in functionAppConfig.runtime (python 3.11), not in siteConfig.pythonVersion
  // checkov:skip=CKV_AZURE_212: numberOfWorkers is an App Service plan setting; Flex Consumption scales instances per function on its own
  // checkov:skip=CKV_AZURE_222: the Azure Monitor action group webhook calls POST /api/alerts from the public internet (action groups cannot reach private endpoints), so public network access must stay enabled; every route but /api/health needs a function key
  // checkov:skip=CKV_AZURE_213: the platform health check (healthCheckPath) is not supported on Flex Consumption; GET /api/health serves monitoring instead
  name: appName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: concat(platformAppSettings, extraAppSettings)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

output appId string = app.id
output appName string = app.name
output defaultHostName string = app.properties.defaultHostName
