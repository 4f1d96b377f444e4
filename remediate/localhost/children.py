"""serve's child processes and their supervision: a dead child is restarted after a back-off (1, 2, 4... s, at
most 30), at most ``max_restarts`` times within ``window`` seconds; past that the part has failed and serve stops
with a message naming it. Every change is written to the state file /api/health reads (``app/parts.py``).

Children run in their own session (Ctrl-C reaches serve alone, which stops them in order) and on Linux receive
SIGTERM when serve dies, however it dies (``PR_SET_PDEATHSIG``, set in the child itself: ``die_with_parent`` for
serve's Python processes, ``with_parent`` for any other program, such as Azurite)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..app.parts import RUNNING, PartState, write_parts

log = logging.getLogger("kv_remediate.serve")

PARENT_SETTING = "KV_REMEDIATE_SERVE_PID"
"""The supervisor's pid, given to its children: each exits when its parent is no longer that process."""
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0


@dataclass(frozen=True)
class RestartPolicy:
    """At most ``max_restarts`` restarts of one child within ``window`` seconds (0: a death is a failure)."""

    max_restarts: int = 5
    window: float = 300.0


PR_SET_PDEATHSIG = 1
_SHIM = ("import ctypes, os, signal, sys\n"
         "ctypes.CDLL(None).prctl(1, int(signal.SIGTERM), 0, 0, 0)\n"
         "if os.getppid() != int(sys.argv[1]): sys.exit('kv-remediate serve: the supervisor is gone')\n"
         "os.execv(sys.argv[2], sys.argv[2:])\n")
"""Sets PR_SET_PDEATHSIG (1), checks the parent is still there, then becomes the program (the setting survives
exec): no ``preexec_fn``, which is unsafe in a process with threads."""


def with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that it receives SIGTERM when this process dies (Linux; elsewhere ``argv`` as it is)."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-c", _SHIM, str(os.getpid()), *argv]


def die_with_parent() -> None:
    """In a Python child of serve: receive SIGTERM when serve dies (Linux), and exit at once if it already has."""
    parent = os.environ.get(PARENT_SETTING)
    if not parent:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if str(os.getppid()) != parent:
        raise SystemExit(f"kv-remediate serve: the supervisor (pid {parent}) is gone; this process stops")


def exit_text(code: int) -> str:
    """``exited with code 1`` or ``was killed by SIGKILL``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Child:
    """One supervised process (``part`` ``instance``): started, watched, restarted within its policy."""

    def __init__(self, part: str, instance: int, argv: Sequence[str], env: dict[str, str],
                 policy: RestartPolicy) -> None:
        self.part, self.instance, self.argv, self.env, self.policy = part, instance, list(argv), env, policy
        self.process: subprocess.Popen[bytes] | None = None
        self.deaths: deque[float] = deque()
        self.restart_at: float | None = None
        self.state = PartState(part, instance, RUNNING)

    @property
    def name(self) -> str:
        return f"{self.part} {self.instance}"

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True)
        self.restart_at = None
        self.state = PartState(self.part, self.instance, RUNNING, f"pid {self.process.pid}")

    def check(self, now: float) -> str | None:
        """Notice a death, restart when due; the failure message once the policy is exhausted, else None."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                log.warning("kv-remediate serve: restarting %s", self.name)
                self.start()
            return None
        code = self.process.poll() if self.process is not None else None
        if code is None:
            return None
        while self.deaths and now - self.deaths[0] > self.policy.window:
            self.deaths.popleft()
        if len(self.deaths) >= self.policy.max_restarts:
            detail = (f"{exit_text(code)}; it died {len(self.deaths) + 1} times within {self.policy.window:.0f} s; "
                      "not restarted again")
            self.state = PartState(self.part, self.instance, "failed", detail)
            return f"the {self.name} process {detail}; see its error above"
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** len(self.deaths))
        self.deaths.append(now)
        self.restart_at = now + delay
        detail = (f"{exit_text(code)}; restarting in {delay:.0f} s (restart {len(self.deaths)} of at most "
                  f"{self.policy.max_restarts} within {self.policy.window:.0f} s)")
        self.state = PartState(self.part, self.instance, "restarting", detail)
        log.warning("kv-remediate serve: the %s process %s", self.name, detail)
        return None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)


class Supervisor:
    """serve's children, checked by ``poll()`` and reported in the state file."""

    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self.children: list[Child] = []
        self._written: list[PartState] | None = None

    def add(self, child: Child) -> None:
        self.children.append(child)

    def start(self) -> None:
        for child in self.children:
            child.start()
        self.write()

    def write(self) -> None:
        states = [c.state for c in self.children]
        if states != self._written:
            write_parts(self.state_file, states)
            self._written = states

    def poll(self) -> str | None:
        """Check every child once; the first failure message, if a part cannot be kept running."""
        now = time.monotonic()
        failure = None
        for child in self.children:
            found = child.check(now)
            failure = failure or found
        self.write()
        return failure

    def stop(self) -> None:
        """Stop the children: SIGTERM to all, then wait for each."""
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.terminate()
        for child in self.children:
            child.stop()
