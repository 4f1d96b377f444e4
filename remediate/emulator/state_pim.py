"""PIM state: role assignment schedule requests, role management policies and approvals."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from remediate.emulator.snapshot import AUTHZ, role_definition_id
from remediate.emulator.state_authz import AuthzState
from remediate.emulator.state_common import (
    ArmError,
    guid_of,
    norm,
    now_iso,
    parse_duration,
    parse_time,
)


class PimState(AuthzState):
    """PIM state: role assignment schedule requests, role management policies and approvals."""

    # ---- PIM ---------------------------------------------------------------------------------------------------
    # Evidence for the answers below (no public recording of PIM AdminAssign traffic exists yet, see
    # shared/reference/recordings/SOURCES.md "Not found as recordings"):
    # - a request name is single-use: re-sending a name answers "A role assignment request with Id: {guid} already
    #   exists" (Azure/bicep-types-az#1431, Azure/bicep#12472); code RoleAssignmentRequestExists with status 400, as
    #   the PIM clients that handle it read it (e.g. the Rust azure-pim-cli's check_error_response: 400 + code).
    # - an active assignment of the role to the principal at the scope: 400 RoleAssignmentExists "The Role
    #   assignment already exists." (hashicorp/terraform-provider-azuread#1306, co-native-ab/pimctl#51).
    # - role management policy: 400 RoleAssignmentRequestPolicyValidationFailed "The following policy rules failed:
    #   [\"ExpirationRule\"]" (hashicorp/terraform-provider-azurerm#22766, MicrosoftDocs/azure-docs#80426); an
    #   approval rule leaves the request in status PendingApproval with an approvalId and no assignment (REST spec
    #   2020-10-01 RoleAssignmentScheduleRequest.status enum; "Use Role Assignment Approvals to approve PIM role
    #   activation requests with REST API").
    def _policy_for(self, scope: str, role_guid: str) -> list[dict[str, Any]]:
        """The effective rules of the closest role management policy assignment at or above ``scope`` for the role."""
        best: tuple[int, list[dict[str, Any]]] | None = None
        for raw in self.snap.role_management_policies:
            props = raw.get("properties", raw) if isinstance(raw, dict) else {}
            pscope = str(props.get("scope") or "")
            rd = str(props.get("roleDefinitionId") or "")
            if not pscope or (rd and guid_of(rd) != role_guid) or not self.at_or_above(pscope, scope):
                continue
            depth = norm(pscope).count("/")
            if best is None or depth > best[0]:
                best = (depth, list(props.get("effectiveRules") or props.get("rules") or []))
        return best[1] if best else []

    @staticmethod
    def _applies(rule: dict[str, Any], caller: str) -> bool:
        target = rule.get("target") or {}
        return str(target.get("caller") or caller).lower() == caller.lower() and \
            str(target.get("level") or "Assignment").lower() == "assignment"

    def _check_policy(self, scope: str, role_guid: str, rtype: str, etype: str,
                      duration: timedelta | None) -> bool:
        """Raise the policy's refusal, or return whether the request needs an approver."""
        caller = "EndUser" if rtype.lower().startswith("self") else "Admin"
        failed: list[str] = []
        approval = False
        for rule in self._policy_for(scope, role_guid):
            if not self._applies(rule, caller):
                continue
            kind = str(rule.get("ruleType") or "")
            if kind == "RoleManagementPolicyExpirationRule":
                longest = parse_duration(str(rule.get("maximumDuration") or ""))
                if (rule.get("isExpirationRequired") and etype == "noexpiration") or (
                        longest is not None and (duration is None or duration > longest)):
                    failed.append("ExpirationRule")
            elif kind == "RoleManagementPolicyApprovalRule":
                approval = approval or bool((rule.get("setting") or {}).get("isApprovalRequired"))
        if failed:
            raise ArmError(400, "RoleAssignmentRequestPolicyValidationFailed",
                           f"The following policy rules failed: {json.dumps(sorted(set(failed)))}")
        return approval

    def put_schedule_request(self, scope: str, name: str, body: Any) -> dict[str, Any]:
        """``roleAssignmentScheduleRequests``: AdminAssign creates the assignment with its expiry (or waits for an
        approver when the role's policy says so), AdminRemove deletes it. A request name is single-use."""
        props = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(props, dict) or not props.get("principalId") or not props.get("roleDefinitionId") \
                or not props.get("requestType"):
            raise ArmError(400, "InvalidRoleAssignmentScheduleRequest",
                           "The request must have properties.principalId, roleDefinitionId and requestType.")
        rid = f"{'' if norm(scope) == '/' else scope.rstrip('/')}{AUTHZ}roleAssignmentScheduleRequests/{name}"
        rtype = str(props["requestType"])
        principal_id = str(props["principalId"])
        rd_id = role_definition_id(str(props["roleDefinitionId"]), scope)
        with self.lock:
            if rid.lower() in self.schedule_requests:
                raise ArmError(400, "RoleAssignmentRequestExists",
                               f"A role assignment request with Id: {name} already exists")
            self._live()
            schedule = copy.deepcopy(props.get("scheduleInfo") or {})
            target: str | None = None
            status = "Provisioned"
            ptype = None
            approval_id: str | None = None
            if rtype.lower() in ("adminremove", "selfdeactivate"):
                target, ptype = self._remove_by_request(scope, principal_id, rd_id)
                status = "Revoked"
            else:
                if not self.role_exists(guid_of(rd_id)):
                    raise ArmError(400, "RoleDefinitionDoesNotExist",
                                   f"The specified role definition with ID '{guid_of(rd_id)}' does not exist.")
                if self._duplicate(scope, principal_id, guid_of(rd_id), None) is not None:
                    raise ArmError(400, "RoleAssignmentExists", "The Role assignment already exists.")
                start, end, etype = _schedule_window(schedule)
                needs_approval = self._check_policy(scope, guid_of(rd_id), rtype, etype,
                                                    end - start if end is not None else None)
                target = str(uuid.uuid5(uuid.NAMESPACE_URL, rid.lower()))
                ptype = props.get("principalType") or (self.principals[principal_id.lower()].type
                                                       if principal_id.lower() in self.principals else None)
                if needs_approval:
                    status = "PendingApproval"
                    approval_id = f"/providers/Microsoft.Authorization/roleAssignmentApprovals/{uuid.uuid4()}"
                else:
                    self._provision(scope, target, _assignment_body(rd_id, principal_id, ptype, props), end)
            req = {"id": rid, "name": name, "type": "Microsoft.Authorization/RoleAssignmentScheduleRequests",
                   "properties": {"scope": scope, "roleDefinitionId": rd_id, "principalId": principal_id,
                                  "principalType": ptype, "requestType": rtype, "status": status,
                                  "approvalId": approval_id, "targetRoleAssignmentScheduleId": target,
                                  "targetRoleAssignmentScheduleInstanceId": None, "scheduleInfo": schedule,
                                  "linkedRoleEligibilityScheduleId": None,  # not echoed (REST spec example)
                                  "justification": props.get("justification"),
                                  "ticketInfo": props.get("ticketInfo") or {"ticketNumber": None, "ticketSystem": None},
                                  "condition": props.get("condition"),
                                  "conditionVersion": props.get("conditionVersion"),
                                  "createdOn": now_iso(), "requestorId": None}}
            self.schedule_requests[rid.lower()] = req
            self.snap.role_assignment_schedule_requests = list(self.schedule_requests.values())
            return copy.deepcopy(req)

    def _remove_by_request(self, scope: str, principal_id: str, rd_id: str) -> tuple[str, str | None]:
        """AdminRemove: delete the matching assignment; (its name, its principal type)."""
        dup = self._duplicate(scope, principal_id, guid_of(rd_id), None)
        if dup is None:
            raise ArmError(400, "RoleAssignmentDoesNotExist", "The Role assignment does not exist.")
        del self.assignments[dup["id"].lower()]
        self.snap.role_assignments = list(self.assignments.values())
        return dup["name"], dup["properties"].get("principalType")

    def _provision(self, scope: str, target: str, body: dict[str, Any], end: datetime | None) -> dict[str, Any]:
        _, a = self.put_role_assignment(scope, target, body,
                                        expires_on=end.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if end else None)
        return a

    def decide_schedule_request(self, request_id: str, approve: bool) -> dict[str, Any]:
        """An approver's decision on a PendingApproval request (what the approvals API would do): approved ->
        Provisioned with its assignment (the expiration counted from now), denied -> Denied."""
        with self.lock:
            req = self.schedule_requests.get(request_id.lower())
            if req is None or req["properties"]["status"] != "PendingApproval":
                raise ArmError(404, "RoleAssignmentScheduleRequestNotFound",
                               f"No pending role assignment schedule request '{request_id}'.")
            p = req["properties"]
            if approve:
                exp = (p.get("scheduleInfo") or {}).get("expiration") or {}
                d = parse_duration(str(exp.get("duration") or "")) if str(exp.get("type") or "").lower() == \
                    "afterduration" else None
                end = datetime.now(UTC) + d if d is not None else parse_time(str(exp.get("endDateTime") or ""))
                self._provision(p["scope"], p["targetRoleAssignmentScheduleId"],
                                _assignment_body(p["roleDefinitionId"], p["principalId"], p.get("principalType"), p),
                                end)
            p["status"] = "Provisioned" if approve else "Denied"
            self.snap.role_assignment_schedule_requests = list(self.schedule_requests.values())
            return copy.deepcopy(req)

    def get_schedule_request(self, scope: str, name: str) -> dict[str, Any]:
        """A stored schedule request, or 404 RoleAssignmentScheduleRequestNotFound."""
        rid = f"{'' if norm(scope) == '/' else scope.rstrip('/')}{AUTHZ}roleAssignmentScheduleRequests/{name}"
        with self.lock:
            r = self.schedule_requests.get(rid.lower())
            if r is None:
                raise ArmError(404, "RoleAssignmentScheduleRequestNotFound",
                               f"The role assignment schedule request '{name}' is not found.")
            return copy.deepcopy(r)


def _assignment_body(rd_id: str, principal_id: str, ptype: str | None, props: dict[str, Any]) -> dict[str, Any]:
    """The role assignment a schedule request provisions (its condition carried over)."""
    return {"properties": {"roleDefinitionId": rd_id, "principalId": principal_id, "principalType": ptype,
                           "condition": props.get("condition"), "conditionVersion": props.get("conditionVersion")}}


def _schedule_window(schedule: dict[str, Any]) -> tuple[datetime, datetime | None, str]:
    """(start, end or None, expiration type lowercased) of a request's ``scheduleInfo``; the start defaults to now
    and is written back into ``schedule``; 400 InvalidScheduleInfo when a stated expiration does not parse."""
    start = parse_time(str(schedule.get("startDateTime") or "")) or datetime.now(UTC)
    schedule.setdefault("startDateTime", start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    exp = schedule.get("expiration") or {}
    end: datetime | None = None
    etype = str(exp.get("type") or "NoExpiration").lower()
    if etype == "afterdatetime":
        end = parse_time(str(exp.get("endDateTime") or ""))
    elif etype == "afterduration":
        d = parse_duration(str(exp.get("duration") or ""))
        end = start + d if d is not None else None
    if etype in ("afterdatetime", "afterduration") and end is None:
        raise ArmError(400, "InvalidScheduleInfo", "The expiration of the schedule is not valid.")
    return start, end, etype
