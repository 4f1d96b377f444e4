"""The parts of a Slack interactivity payload (``block_actions``) the app reads, as msgspec structs: unknown
fields are ignored, every field read is typed and bounded. Imported only by the Slack route (msgspec loads on first
use, not at cold start)."""

from __future__ import annotations

from typing import Annotated

import msgspec

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Text = Annotated[str, msgspec.Meta(max_length=255)]
Value = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Url = Annotated[str, msgspec.Meta(max_length=3000)]


class User(msgspec.Struct, frozen=True):
    """``user``: who clicked."""

    id: Id
    username: Text | None = None
    team_id: Id | None = None


class Team(msgspec.Struct, frozen=True):
    """``team``: the workspace the click came from."""

    id: Id


class Action(msgspec.Struct, frozen=True):
    """One entry of ``actions``: the button (``action_id``) and what we put in its ``value``."""

    action_id: Text
    value: Value | None = None
    block_id: Text | None = None


class Interaction(msgspec.Struct, frozen=True):
    """A ``block_actions`` interaction payload."""

    type: Text
    user: User
    actions: Annotated[list[Action], msgspec.Meta(max_length=5)] = []
    team: Team | None = None
    response_url: Url | None = None
