"""serve's supervision rules on real child processes, with the clock given: a dead child is restarted after a
back-off that doubles, at most N times within the window, then the part has failed with a message naming it; the
state health reads follows each step; which settings count as "storage configured" (else serve embeds Azurite)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from remediate.app.parts import STATE_SETTING, PartState, read_parts, write_parts
from remediate.localhost.children import Child, RestartPolicy, Supervisor, exit_text
from remediate.localhost.supervisor import storage_configured

DIES = [sys.executable, "-c", "raise SystemExit(3)"]


def _dead(child: Child) -> None:
    assert child.process is not None
    child.process.wait(timeout=30)


def test_a_dying_child_is_restarted_with_back_off_then_fails_naming_the_part(tmp_path: Path) -> None:
    # given a worker that dies at once, allowed 2 restarts within 300 s
    supervisor = Supervisor(tmp_path / "parts.json")
    child = Child("worker", 1, DIES, {}, RestartPolicy(max_restarts=2, window=300))
    supervisor.add(child)
    supervisor.start()
    t = time.monotonic()
    # when it dies: then it waits 1 s, and health reads "restarting" with why
    _dead(child)
    assert child.check(t) is None and child.state.state == "restarting"
    assert "exited with code 3; restarting in 1 s (restart 1 of at most 2 within 300 s)" in child.state.detail
    supervisor.write()
    assert read_parts({STATE_SETTING: str(supervisor.state_file)}) == [child.state]
    assert child.check(t + 0.5) is None and child.process is not None and child.process.poll() is not None
    # when the back-off has passed: a new process, running
    first = child.process.pid
    assert child.check(t + 1) is None and child.state.state == "running" and child.process.pid != first
    # when it dies again: the back-off doubles
    _dead(child)
    assert child.check(t + 2) is None and "restarting in 2 s (restart 2 of at most 2" in child.state.detail
    assert child.check(t + 4) is None and child.state.state == "running"
    # when it dies a third time within the window: failed, and the message names the part
    _dead(child)
    message = child.check(t + 5)
    assert message == ("the worker 1 process exited with code 3; it died 3 times within 300 s; not restarted "
                       "again; see its error above")
    assert child.state.state == "failed"
    supervisor.stop()


def test_deaths_outside_the_window_are_forgotten(tmp_path: Path) -> None:
    # given a child allowed one restart within 10 s, dying once every minute
    child = Child("worker", 1, DIES, {}, RestartPolicy(max_restarts=1, window=10))
    child.start()
    t = time.monotonic()
    for minute in range(3):
        _dead(child)
        now = t + 60 * minute
        # then each death is a first one: restarted after 1 s, never failed
        assert child.check(now) is None and "restart 1 of at most 1" in child.state.detail
        assert child.check(now + 1) is None and child.state.state == "running"
    child.stop()


def test_a_child_killed_by_a_signal_says_so() -> None:
    assert exit_text(-9) == "was killed by SIGKILL" and exit_text(1) == "exited with code 1"


def test_health_without_serve_has_no_parts_and_an_unreadable_state_file_is_a_failed_part(tmp_path: Path) -> None:
    assert read_parts({}) == []
    [part] = read_parts({STATE_SETTING: str(tmp_path / "missing.json")})
    assert (part.part, part.state) == ("supervisor", "failed") and "unreadable" in part.detail
    path = tmp_path / "parts.json"
    write_parts(path, [PartState("worker", 1, "running", "pid 1")])
    assert read_parts({STATE_SETTING: str(path)}) == [PartState("worker", 1, "running", "pid 1")]


@pytest.mark.parametrize("env, found", [
    ({}, None),
    ({"AzureWebJobsStorage": ""}, None),
    ({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}, "AzureWebJobsStorage"),
    ({"azurewebjobsstorage": "UseDevelopmentStorage=true"}, "AzureWebJobsStorage"),
    ({"AzureWebJobsStorage__accountName": "stkvremediate"}, "AzureWebJobsStorage__accountName"),
    ({"AzureWebJobsStorage:queueServiceUri": "https://x.queue.core.windows.net"},
     "AzureWebJobsStorage__queueServiceUri"),
    ({"KV_REMEDIATE_STORAGE": "UseDevelopmentStorage=true"}, None),  # the CLI's grant store, not the app's storage
])
def test_which_settings_configure_the_apps_storage(env: dict[str, str], found: str | None) -> None:
    # given the environment; then serve uses the storage it names, or (None) starts its own Azurite
    assert storage_configured(env) == found
