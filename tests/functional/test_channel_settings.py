"""Health names unusable channel settings (the notification kind, Slack's approvers, team and signing secret),
never their values."""

from __future__ import annotations

import pytest

from remediate.app.settings import Settings

OID = "0d7e3c4b-1111-4222-8333-944455556666"


@pytest.mark.parametrize(("env", "setting"), [
    ({"KV_REMEDIATE_NOTIFY_KIND": "msteams"}, "KV_REMEDIATE_NOTIFY_KIND"),
    ({"KV_REMEDIATE_SLACK_APPROVERS": "ada=someone", "KV_REMEDIATE_SLACK_SIGNING_SECRET": "s3cr3t-value"},
     "KV_REMEDIATE_SLACK_APPROVERS"),
    ({"KV_REMEDIATE_SLACK_TEAM": "contoso"}, "KV_REMEDIATE_SLACK_TEAM"),
    ({"KV_REMEDIATE_SLACK_APPROVERS": f"U0ADA={OID}"}, "KV_REMEDIATE_SLACK_SIGNING_SECRET"),
])
def test_channel_setting_problems_are_named_without_values(env: dict[str, str], setting: str) -> None:
    problems = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", **env}).problems
    named = [p for p in problems if p.setting == setting]
    assert named, problems
    for p in named:
        for value in env.values():
            assert value not in p.problem


def test_good_channel_settings_have_no_problem() -> None:
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "KV_REMEDIATE_NOTIFY_KIND": "slack",
           "KV_REMEDIATE_SLACK_APPROVERS": f"U0ADA={OID}", "KV_REMEDIATE_SLACK_SIGNING_SECRET": "secret",
           "KV_REMEDIATE_SLACK_TEAM": "T0TEAM"}
    problems = Settings.from_env(env).problems
    assert not [p for p in problems if "SLACK" in p.setting or "NOTIFY" in p.setting]
