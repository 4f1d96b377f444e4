"""The one catalogue of cause codes and their wording: a plain explanation and the advice for each.

Templates are filled from a context of known values (``{who}``, ``{what}``, ``{vault}`` ...); a value that is
not known renders as a neutral phrase, never as a guess. ``{vault}`` is already a phrase ("vault 'kv1'", "the
vault"), so no template says "the vault {vault}". A cause may have variants (``VARIANTS``): the same code in a
situation its main wording would contradict (the input names no vault; the caller is known only by UPN; the vault
uses access policies), chosen by explain.py from the finding's own fields.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CauseText:
    """How one cause is explained to a platform engineer, and what to do about it."""

    title: str
    explanation: str
    advice: tuple[str, ...]


CAUSES: dict[str, CauseText] = {
    "AUTH_CHALLENGE": CauseText(
        "Authentication challenge",
        "The 401 on {vault} is Key Vault's normal first-call challenge (the request carried no token yet); "
        "the SDK retries with a token. Nothing is wrong and nothing needs to be granted.",
        ("Exclude OperationName == \"Authentication\" with status 401 from alert rules; it precedes every "
         "successful first call.",)),
    "AUTH_FAILED": CauseText(
        "Authentication failed",
        "Key Vault rejected the token of {who} on {vault} before checking any permission{message_part}. "
        "A grant would not help: the caller must present a valid token for the vault's tenant.",
        ("Make the credential request a token from the vault's tenant{tenant_hint} (for example set "
         "AZURE_TENANT_ID or the credential's tenant_id, or add it to additionally_allowed_tenants).",
         "For an expired token or a CAE claims challenge, let the SDK refresh the token (do not cache tokens "
         "yourself); for a wrong audience request the scope https://vault.azure.net/.default.")),
    "THROTTLED": CauseText(
        "Throttled",
        "Key Vault throttled {who} on {vault} (429{limit}). This is a rate problem, not a permission problem.",
        ("Use one client and one credential per vault per process, and cache secrets in memory instead of "
         "reading them per request.",
         "Honour Retry-After with exponential back-off (the Azure SDKs do by default).",
         "Limits: about 4,000 requests per 10 seconds per vault for most operations, fewer for HSM keys and "
         "RSA 3072/4096 key operations (Key Vault service limits).")),
    "NETWORK_BLOCKED": CauseText(
        "Blocked by the vault's network rules",
        "The vault's firewall refused the request from {caller_ip} before any permission was checked{network}. "
        "Granting a role or access policy would not help.",
        ("Add the caller's outbound address as an IP rule, or reach the vault through a private endpoint or an "
         "allowed virtual-network service endpoint.",
         "If the caller is an Azure service on the trusted-services list, enable \"Allow trusted Microsoft "
         "services to bypass this firewall\".",
         "Check publicNetworkAccess: when it is Disabled only private endpoints can reach the vault.")),
    "TRUSTED_SERVICE_DENIED": CauseText(
        "First-party service not trusted",
        "Key Vault refused a Microsoft first-party service calling {vault}: it is not on the trusted-services "
        "list for this vault, or the \"Allow trusted services\" bypass is off.",
        ("Check the trusted-services list for the calling service and enable \"Allow trusted Microsoft services "
         "to bypass this firewall\" when it is listed.",
         "If a person signed in with a Microsoft account (MSA), use an Entra ID account instead.")),
    "KEY_OPERATION_NOT_PERMITTED": CauseText(
        "Operation not allowed by the key itself",
        "The key{object} does not allow {key_op}: its own permitted operations (key_ops) exclude it. "
        "Permissions are not the problem, so no grant is proposed.",
        ("Update the key's permitted operations (az keyvault key set-attributes --ops ...) or create a key "
         "version that allows the operation; do not change anyone's access.",)),
    "OBJECT_DISABLED": CauseText(
        "Object is disabled",
        "{object_cap} is disabled, so Key Vault refuses to use it whatever the caller's permissions.",
        ("Enable it (az keyvault {object_cli} set-attributes --enabled true) or use another, enabled version.",)),
    "COMPOUND_IDENTITY_REQUIRED": CauseText(
        "Compound identity entry",
        "The only access-policy entry that would allow {what} for {who} on {vault} is bound to application "
        "{application_id}: it applies only when that application calls on behalf of the user.",
        ("Call through that application on behalf of the user (OBO), or add a plain entry without an "
         "applicationId for this principal.",)),
    "PRINCIPAL_NOT_IDENTIFIED": CauseText(
        "Caller not identified",
        "The input says {what} was denied on {vault} but does not name who was denied, so no fix can be aimed "
        "at anyone.",
        ("Alert on the audit logs (AZKVAuditLogs or AzureDiagnostics) with the caller's object id, app id, vault, "
         "operation and object as dimensions, so every alert names the principal.",)),
    "VAULT_NOT_FOUND": CauseText(
        "Vault not found",
        "{vault_cap} is not in the subscriptions kv-remediate can see{searched}.",
        ("Give the function's identity Reader on the vault's subscription, resource group or a management group above "
         "it: Azure Resource Graph finds vaults only where the identity can read.",
         "If AZURE_SUBSCRIPTION_IDS (or --subscription) is set, add the vault's subscription to it, or unset it to "
         "search every subscription the identity can read.",
         "A vault created minutes ago may not be in Resource Graph yet: retry shortly.")),
    "DENY_ASSIGNMENT": CauseText(
        "Deny assignment",
        "A deny assignment ({deny_name}) at {deny_scope} blocks {what} for {who} on {vault}; deny assignments win "
        "over every role assignment, so granting a role would not help.",
        ("Ask the owner of the deny assignment (often a managed application or a deployment stack) to exclude "
         "this principal or remove the deny.",)),
    "CONDITION_NOT_MET": CauseText(
        "ABAC condition not met",
        "{who} holds {grant_role} on {vault}, but only under an ABAC condition that does not allow {what} on "
        "{object_plain}.",
        ("The condition, evaluated against this request and not met: {condition}",
         "Widen the condition to cover this object, or call for an object it already covers.")),
    "ALREADY_GRANTED": CauseText(
        "Already granted",
        "{who} already holds {what} on {vault} ({grant_reason}); the denial came before the grant took effect or "
        "from another identity.",
        ("RBAC changes take up to 10 minutes to apply (longer at management-group scope or for managed identities "
         "in groups): wait, then get a fresh token.",
         "Check which identity the application actually uses (DefaultAzureCredential may pick another one).")),
    "WRONG_PERMISSION_MODEL": CauseText(
        "Permission held in the other model",
        "{vault} uses {model_name}, so {who}'s permission in {other_model_name} is ignored. The fix grants "
        "{what} in {model_name}.",
        ("Remove the unused grant in {other_model_name} once the new one works, to keep one source of truth.",)),
    "MISSING_ROLE_ASSIGNMENT": CauseText(
        "Missing role assignment",
        "{who} has no role that grants {what} on {vault}, which uses Azure RBAC. The fix assigns {role} at {scope}.",
        ()),
    "MISSING_ACCESS_POLICY": CauseText(
        "Missing access policy",
        "{who} has no access-policy entry that allows {what} on {vault}, which uses access policies. The fix adds "
        "exactly {permissions} to its entry.",
        ()),
    "HSM_NOT_ACTIVATED": CauseText(
        "Managed HSM not activated",
        "{vault_cap} is not activated (security domain activation status {reason}): a Managed HSM refuses every "
        "data-plane request until its security domain is downloaded, whatever roles the caller holds, so no grant "
        "is proposed.",
        ("Activate the HSM: an initial administrator downloads the security domain with at least three RSA key pairs "
         "(az keyvault security-domain download --hsm-name {hsm_name} --sd-wrapping-keys ... --sd-quorum 2 "
         "--security-domain-file ...); keep the file and the private keys offline.",
         "Retry the request once `az keyvault show --hsm-name {hsm_name}` shows "
         "securityDomainProperties.activationStatus Active.")),
    "HSM_ARM_NOT_TRUSTED": CauseText(
        "Managed HSM does not trust ARM for key management",
        "The request reached the keys of {vault} through Azure Resource Manager (the Azure portal or a template "
        "deployment), and the HSM's AllowKeyManagementOperationsThroughARM setting is false, as its own data plane "
        "answered kv-remediate. \"Azure "
        "Managed HSM does not trust Azure Resource Manager by default\", so ARM may not create or list its keys on "
        "anyone's behalf, whatever local roles {who} holds. kv-remediate never changes an HSM's trust settings, so "
        "no grant is proposed.",
        ("Manage the key through the HSM's own data plane instead of ARM: az keyvault key create --hsm-name "
         "{hsm_name} --name <key> --kty RSA-HSM (az keyvault key list --hsm-name {hsm_name} to list them), with a "
         "local role that allows it.",
         "Or ask an HSM administrator to allow ARM where its risk is acceptable: Microsoft says that for many "
         "higher-assurance environments trusting the Azure portal and ARM \"may be considered a risk\", and offers "
         "the opt-in where it is \"an acceptable tradeoff for the ease of use of the Azure portal and template "
         "deployments\" (az keyvault setting update --hsm-name {hsm_name} --name "
         "AllowKeyManagementOperationsThroughARM --value true).",
         "Once ARM is trusted it acts on behalf of the user, so the caller still needs a local role for the key "
         "operation (Microsoft Learn managed-hsm/authorize-azure-resource-manager.md).")),
    "UNKNOWN": CauseText(
        "Unknown",
        "The denial of {who} on {vault} could not be explained from what was seen ({reason}).",
        ("Look at the vault's AuditEvent logs for the request (by correlation id) and at its network and access "
         "settings.",)),
}


VARIANTS: dict[tuple[str, str], CauseText] = {
    ("VAULT_NOT_FOUND", "no_vault"): CauseText(
        "Vault not named",
        "The input does not name the vault ({what} was denied for {who}), so there was no vault to read and no fix "
        "to aim.",
        ("Send what names the vault: the denial's audit record (AzureDiagnostics or AZKVAuditLogs row), the whole "
         "error text (its \"Vault:\" line or request URL), or a runbook request / --vault with the vault's name.",)),
    ("VAULT_NOT_FOUND", "by_id"): CauseText(
        "Vault not found",
        "{vault_cap} (subscription {subscription}, named by the input's resource id) could not be read: it does not "
        "exist there, or kv-remediate's identity may not read it.",
        ("Give the function's identity Reader on subscription {subscription} (or on the vault's resource group).",
         "If the vault was deleted or moved, send a denial that names where it is now.")),
    ("PRINCIPAL_NOT_IDENTIFIED", "upn"): CauseText(
        "Caller known only by UPN",
        "The input names the caller only by user principal name {upn} (its object id is redacted), and Microsoft "
        "Graph did not resolve it to an object id (the notes say why), so no fix can be aimed at it.",
        ("If the note says Microsoft Graph refused, grant the function's identity the Graph application permission "
         "User.Read.All (admin consent) so a user named by UPN can be resolved.",
         "If Graph has no such user (a guest of another tenant, or a deleted user), send the audit record with the "
         "caller's object id, or a runbook request with it.")),
    ("PRINCIPAL_NOT_IDENTIFIED", "app"): CauseText(
        "Caller known only by application id",
        "The input names the caller only by application id {app_id}, not by object id, so no fix can be aimed at "
        "it.",
        ("Send the audit record (it carries the caller's object id), or a runbook request with the service "
         "principal's object id.",)),
    ("COMPOUND_IDENTITY_REQUIRED", "input"): CauseText(
        "Compound identity entry",
        "Key Vault says its access policy lets {who} reach {vault} only through an application calling on behalf of "
        "the user (on-behalf-of, OBO), and this call came without one; no entry was read to say which application.",
        ("Call through the application the caller's access-policy entry names, on behalf of the user (OBO), or add "
         "a plain entry without an applicationId for this principal.",)),
    ("AUTH_CHALLENGE", "hsm"): CauseText(
        "Authentication challenge",
        "The 401 on {vault} is the Managed HSM's normal first-call challenge (the request carried no token yet; the "
        "challenge names the audience https://managedhsm.azure.net); the SDK retries with a token. Nothing is wrong "
        "and nothing needs to be granted.",
        ("Exclude OperationName == \"Authentication\" with status 401 from alert rules on the HSM's AuditEvent "
         "logs; it precedes every successful first call.",)),
    ("NETWORK_BLOCKED", "hsm"): CauseText(
        "Blocked by the Managed HSM's network rules",
        "{vault_cap}'s firewall refused the request from {caller_ip} before any local role was checked{network}. "
        "Granting a local role would not help.",
        ("Add the caller's public outbound address as an IP rule (up to 10 IPv4 rules), or reach the HSM through a "
         "private endpoint.",
         "If the caller is a trusted Microsoft service, enable \"Allow trusted Microsoft services to bypass this "
         "firewall\" (disabling public access does not suppress that bypass).",)),
    ("VAULT_NOT_FOUND", "hsm"): CauseText(
        "Managed HSM not found",
        "{vault_cap} is not in the subscriptions kv-remediate can see{searched}.",
        ("Give the function's identity Reader on the HSM's subscription or resource group (Azure Resource Graph and "
         "ARM's managedHSMs list show only what the identity can read).",
         "If AZURE_SUBSCRIPTION_IDS (or --subscription) is set, add the HSM's subscription to it.")),
    ("ALREADY_GRANTED", "hsm"): CauseText(
        "Already granted",
        "{who} already holds {what} on {vault} ({grant_reason}); the denial came before the local role assignment "
        "took effect, or from another identity.",
        ("Retry the request with a fresh token: a new local role assignment applies to requests made after it.",
         "Check which identity the application actually uses (DefaultAzureCredential may pick another one).")),
    ("MISSING_ROLE_ASSIGNMENT", "hsm"): CauseText(
        "Missing local role assignment",
        "{who} holds no Managed HSM local role that grants {what} on {vault} at {target} (local role assignments "
        "at /, /keys and the key's own scope were read). The fix assigns {role} at {scope} in the HSM's local "
        "RBAC{custom_part}.",
        ("A Managed HSM has no access policies, and Azure RBAC roles on its resource id reach only its control "
         "plane: the grant is a local role assignment (az keyvault role assignment create --hsm-name ...).",
         "No Bicep resource exists for local role assignments (they live in the HSM's data plane): run the az "
         "lines, or a deployment script that runs them.")),
    ("MISSING_ROLE_ASSIGNMENT", "hsm_admin"): CauseText(
        "Missing local role assignment",
        "{who} holds no Managed HSM local role that grants {what} on {vault}. This is an administrative data "
        "action (role management, security domain, backup or restore), so no grant is proposed: the roles that "
        "carry it can make their holder Managed HSM Administrator.",
        ("Have an HSM administrator decide; if the caller needs it, assign the narrowest built-in local role that "
         "holds the action (az keyvault role definition list --hsm-name {hsm_name}).",)),
    ("ALREADY_GRANTED", "access_policy"): CauseText(
        "Already granted",
        "{who} already holds {what} on {vault} ({grant_reason}); the denial came before the entry took effect or "
        "from another identity.",
        ("The denial may predate the access-policy entry: retry the request.",
         "Check which identity the application actually uses (DefaultAzureCredential may pick another one).")),
}


class _Defaults(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "(unknown)"


def fields(template: str) -> set[str]:
    """The placeholders a template uses."""
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def render(code: str, context: dict[str, Any], variant: str | None = None) -> tuple[str, tuple[str, ...]]:
    """The explanation and advice for a cause (its ``variant`` when it has that one), filled from ``context``."""
    text = VARIANTS.get((code, variant or ""), CAUSES.get(code, CAUSES["UNKNOWN"]))
    ctx = _Defaults({k: v for k, v in context.items() if v is not None})
    return text.explanation.format_map(ctx), tuple(a.format_map(ctx) for a in text.advice)
