"""The harness's own parts: the gateway under test (a `weir serve` process with the
embedded demo service, started on free ports from a configuration written here) and the
registry of checks with their outcomes.

A check is a function registered with `@check(section, name)`; it raises `Failed` with
what it saw when the gateway does not do what the RFC asks. A check registered with
`known=` names a documented deviation (docs/conformance.md): its failure is reported as
KNOWN-DEVIATION rather than FAIL, and its passing as PASS, so that a fixed deviation
shows. Every check gets the gateway's address and opens its own connections.
"""

import os
import subprocess
import sys
import tempfile
import time
import socket
from dataclasses import dataclass, field
from typing import Callable, Optional

# How long any single answer is awaited; no check needs more than a fraction of it.
WAIT = 5.0

# The configuration the gateway runs with: defaults, but for a short header timeout (so
# that a check whose request never completes ends soon) and the limits a flood crosses.
CONFIG = """\
[server]
header_timeout = "2s"
idle_timeout = "10s"

[server.http2]
max_pending_accept_reset_streams = 20
"""


class Failed(Exception):
    """A check saw something the RFC does not allow; the message says what."""


@dataclass
class Check:
    """One rule checked on the wire."""

    section: str
    name: str
    run: Callable[[tuple], None]
    # Set when the gateway is known to deviate here: the reason, as in docs/conformance.md.
    known: Optional[str] = None


CHECKS: list[Check] = []


def check(section: str, name: str, known: Optional[str] = None):
    """Registers the decorated function as a check of `section` of an RFC."""

    def register(run):
        CHECKS.append(Check(section, name, run, known))
        return run

    return register


@dataclass
class Outcome:
    check: Check
    verdict: str  # PASS, FAIL or KNOWN-DEVIATION
    detail: str = ""
    seconds: float = 0.0


def run_check(item: Check, addr: tuple) -> Outcome:
    started = time.monotonic()
    try:
        item.run(addr)
        verdict, detail = "PASS", ""
    except Failed as failure:
        verdict, detail = ("KNOWN-DEVIATION" if item.known else "FAIL"), str(failure)
    except Exception as error:  # noqa: BLE001 (any surprise is a failure of this check alone)
        verdict, detail = "FAIL", f"{type(error).__name__}: {error}"
    return Outcome(item, verdict, detail, time.monotonic() - started)


@dataclass
class Gateway:
    """A running `weir serve` and the files it writes."""

    process: subprocess.Popen
    addr: tuple
    workdir: tempfile.TemporaryDirectory
    log_path: str = field(default="")

    @staticmethod
    def start(binary: str) -> "Gateway":
        workdir = tempfile.TemporaryDirectory(prefix="weir-conformance-")
        config = os.path.join(workdir.name, "weir.toml")
        with open(config, "w") as out:
            out.write(CONFIG)
        log_path = os.path.join(workdir.name, "weir.log")
        args = [binary, "serve", "--config", config, "--listen", "127.0.0.1:0",
                "--services-listen", "127.0.0.1:0"]
        with open(log_path, "w") as log:
            process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
        addr = Gateway._await_listening(process)
        return Gateway(process, addr, workdir, log_path)

    @staticmethod
    def _await_listening(process: subprocess.Popen) -> tuple:
        prefix = "weir listening on http://"
        deadline = time.monotonic() + 30
        for line in process.stdout:
            if line.startswith(prefix):
                host, port = line[len(prefix):].strip().rsplit(":", 1)
                return host, int(port)
            if time.monotonic() > deadline:
                break
        process.kill()
        raise RuntimeError(f"weir did not say it was listening (exit status {process.poll()})")

    def alive(self) -> bool:
        """Whether the process still runs and answers a TCP connect."""
        if self.process.poll() is not None:
            return False
        with socket.create_connection(self.addr, timeout=WAIT):
            return True

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        with open(self.log_path) as log:
            return "".join(log.readlines()[-lines:])


def report(outcomes: list[Outcome], out=sys.stdout) -> None:
    width = max(len(o.check.section) for o in outcomes)
    for o in outcomes:
        line = f"{o.check.section:<{width}}  {o.verdict:<15}  {o.check.name}"
        if o.detail:
            line += f"\n{'':<{width}}  {'':<15}    {o.detail}"
        if o.verdict == "KNOWN-DEVIATION" and o.check.known:
            line += f"\n{'':<{width}}  {'':<15}    known: {o.check.known}"
        print(line, file=out)
