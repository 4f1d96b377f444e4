"""Approval requests in an Azure Table (``approvals``), shared by every instance of the function app.

Requests: PartitionKey ``request``, RowKey = request id, ``state`` and ``created_at`` as properties (the table reads
and filters well in Storage Explorer), the request's JSON in ``request`` (split when long). Every change is an
``update_entity`` with the ETag read and ``If-Match`` (``MatchConditions.IfNotModified``): a 412 means someone else
changed it first, and the caller re-reads. Index rows, PartitionKey ``open``, RowKey = sha256 of the request's
``open_key``, name the one open request per change; a stale one (its request ended, or was never written) is taken
over with a conditional write.
"""

from __future__ import annotations

import builtins
import hashlib
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from ..approvals.model import ApprovalRequest, ApprovalState
from ..errors import StorageError
from .approvals import Versioned
from .azure import storage_errors, target_of
from .encoding import pack_json, unpack_json

if TYPE_CHECKING:
    from azure.data.tables import TableClient

_PARTITION = "request"
_OPEN = "open"
_TRIES = 100


def _open_row(request: ApprovalRequest) -> str:
    return hashlib.sha256(request.open_key().encode()).hexdigest()


class TableApprovalStore:
    """:class:`~remediate.store.approvals.ApprovalStore` on an Azure Table (sync client; Azurite in tests)."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def _target(self, id: str | None = None) -> str:
        return target_of(self._table, f"table '{self._table.table_name}'") + (f" row {id}" if id else "")

    @staticmethod
    def _entity(request: ApprovalRequest) -> dict[str, Any]:
        return {"PartitionKey": _PARTITION, "RowKey": request.id, "state": request.state,
                "created_at": request.created_at, "grantee": request.grantee,
                **pack_json("request", request.to_dict())}

    @staticmethod
    def _request(entity: Any) -> ApprovalRequest:
        return ApprovalRequest.from_dict(unpack_json("request", dict(entity)))

    def _read(self, id: str) -> Versioned | None:
        try:
            entity = self._table.get_entity(_PARTITION, id)
        except ResourceNotFoundError:
            return None
        return Versioned(self._request(entity), str(entity.metadata["etag"]))

    def open(self, request: ApprovalRequest) -> ApprovalRequest:
        """The request is written first, then claims the index row of its change; when another open request holds
        that row, ours is deleted (nobody has its id yet) and theirs returned. So an index row always names a
        request that exists, and two instances opening the same change at once end with one request."""
        from azure.data.tables import UpdateMode

        row = {"PartitionKey": _OPEN, "RowKey": _open_row(request), "request_id": request.id}
        with storage_errors("opening an approval request", self._target(request.id)):
            self._table.create_entity(self._entity(request))
            for _ in range(_TRIES):
                try:
                    self._table.create_entity(row)
                    return request
                except ResourceExistsError:
                    pass
                try:
                    held = self._table.get_entity(_OPEN, row["RowKey"])
                except ResourceNotFoundError:
                    continue   # released meanwhile: insert again
                got = self._read(str(held.get("request_id")))
                if got is not None and got.request.open:
                    self._table.delete_entity(_PARTITION, request.id)
                    return got.request
                try:   # the row names an ended request: take it over
                    self._table.update_entity(row, mode=UpdateMode.REPLACE, etag=held.metadata["etag"],
                                              match_condition=MatchConditions.IfNotModified)
                    return request
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue
            self._table.delete_entity(_PARTITION, request.id)
        raise StorageError(f"opening approval request {request.id} on {self._target()} did not settle after "
                           f"{_TRIES} conditional writes; retry")

    def get(self, id: str) -> Versioned | None:
        with storage_errors("reading an approval request", self._target(id)):
            return self._read(id)

    def swap(self, request: ApprovalRequest, version: str) -> str | None:
        from azure.data.tables import UpdateMode

        with storage_errors("updating an approval request", self._target(request.id)):
            try:
                meta = self._table.update_entity(self._entity(request), mode=UpdateMode.REPLACE, etag=version,
                                                 match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceNotFoundError):
                return None
            if not request.open:
                self._release(request)
            return str(meta["etag"])

    def _release(self, request: ApprovalRequest) -> None:
        """Drop the open-index row once its request has ended (only if it still names this request)."""
        try:
            held = self._table.get_entity(_OPEN, _open_row(request))
        except ResourceNotFoundError:
            return
        if held.get("request_id") == request.id:
            try:
                self._table.delete_entity(_OPEN, _open_row(request), etag=held.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
            except (ResourceNotFoundError, ResourceModifiedError):
                pass   # taken over or released meanwhile

    def list(self, *, state: ApprovalState | None = None, limit: int | None = 100) -> builtins.list[ApprovalRequest]:
        query, params = "PartitionKey eq @pk", {"pk": _PARTITION}
        if state is not None:
            query, params = query + " and state eq @state", {**params, "state": state}
        with storage_errors("listing approval requests", self._target()):
            found = [self._request(e) for e in self._table.query_entities(query, parameters=params)]
        found.sort(key=lambda r: r.id)
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found if limit is None else found[:max(limit, 0)]
