"""The real message-broker for the Python client's tests: started by the test on 127.0.0.1
with its own database, stopped by its pid."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))  # the package as it is in the tree

BROKER = os.environ.get("MA_BROKER_BINARY", str(ROOT / "build" / "bin" / "message-broker"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, folder: Path, extra=()):
        self.folder = folder
        self.port = free_port()
        self.extra = list(extra)
        self.process = None
        self.log_path = folder / "broker.log"
        self.start()

    def start(self):
        args = [BROKER, "--port", str(self.port), "--database", str(self.folder / "broker.db"),
                "--broker-name", "py-test"]
        if "--discovery" not in self.extra:
            args += ["--discovery", "off"]
        with open(self.log_path, "a") as log:  # the broker keeps its own copy
            self.process = subprocess.Popen(args + self.extra, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the broker exited at its start:\n" + self.log())
            if re.search(r"listening on 127\.0\.0\.1:%d" % self.port, self.log()):
                return
            time.sleep(0.02)
        raise RuntimeError("the broker did not start:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)

    def kill9(self):
        self.stop(signal.SIGKILL)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    yield b
    b.stop()
