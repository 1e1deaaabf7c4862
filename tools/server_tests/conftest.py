"""Fixtures for the `ferrolm serve` tests: start the real binary, hand out clients, stop it.

The binary is $FERROLM_BIN (default target/release/ferrolm under the repo root). $FERROLM_MODEL,
if set, is passed as --model; otherwise the server uses (and fetches) its default model.
"""

import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("FERROLM_BIN") or str(REPO / "target" / "release" / "ferrolm")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
BASE_ARGS = {"--port": "0", "--threads": "2", "--ctx": "1024"}


class Server:
    """One `ferrolm serve` process. `url` is http://127.0.0.1:PORT (no trailing slash)."""

    def __init__(self, extra=()):
        args = dict(BASE_ARGS)
        if os.environ.get("FERROLM_MODEL"):
            args["--model"] = os.environ["FERROLM_MODEL"]
        extra = list(extra)
        flags = []
        i = 0
        while i < len(extra):  # flags given by the test replace the defaults of the same name
            if extra[i] in args and i + 1 < len(extra):
                args[extra[i]] = extra[i + 1]
                i += 2
            else:
                flags.append(extra[i])
                i += 1
        self.argv = [BIN, "serve"] + [x for kv in args.items() for x in kv] + flags
        self.stderr_file = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            env={k: v for k, v in os.environ.items() if k != "FERROLM_API_KEY"},  # only --api-key sets a key
        )
        self.stdout_lines = []
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        self.stopped = False
        self._clients = []  # closed before SIGTERM so no idle keep-alive connection lingers
        self.url = self._wait_listening()

    def _read_stdout(self):
        for raw in self.proc.stdout:  # keeps draining so the pipe never fills
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stdout_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def stderr(self):
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")

    def _fail(self, why):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        pytest.fail(
            f"{why}\ncommand: {' '.join(self.argv)}\nexit code: {self.proc.returncode}\n"
            f"stdout:\n" + "\n".join(self.stdout_lines) + f"\nstderr (last 4000 chars):\n{self.stderr()[-4000:]}",
            pytrace=False,
        )

    def _wait_listening(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(f"server printed no 'listening on http://' line within {START_TIMEOUT_S:.0f} s")
            try:
                line = self._lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait()
                self._fail("server exited before it was listening")
            if "listening on http://" in line:
                url = "http://" + line.split("listening on http://", 1)[1].strip().rstrip("/")
                return url

    def terminate(self):
        """SIGTERM; returns immediately."""
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, check=True):
        """SIGTERM, wait, and (with check) assert a clean exit 0."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        if self.proc.poll() is None:
            self.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            if check:
                self._fail(f"server did not exit within {STOP_TIMEOUT_S:.0f} s of SIGTERM")
        if check and self.proc.returncode != 0:
            self._fail(f"server exited with {self.proc.returncode} after SIGTERM (want 0)")
        return self.proc.returncode

    def client(self, api_key="none", **kw):
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 60.0)
        c = openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, **kw)
        self._clients.append(c)
        return c

    def http(self, **kw):
        kw.setdefault("timeout", 60.0)
        c = httpx.Client(base_url=self.url, **kw)
        self._clients.append(c)
        return c

    def model_id(self):
        with self.http() as h:
            r = h.get("/v1/models")
            r.raise_for_status()
            return r.json()["data"][0]["id"]


@pytest.fixture(scope="session")
def server():
    srv = Server()
    yield srv
    srv.stop(check=True)


@pytest.fixture(scope="session")
def base_url(server):
    return server.url


@pytest.fixture(scope="session")
def client(server):
    return server.client()


@pytest.fixture(scope="session")
def http(server):
    with server.http() as h:
        yield h


@pytest.fixture(scope="session")
def model(server):
    return server.model_id()


@pytest.fixture
def start_server():
    """Factory: start_server("--api-key", "k") -> a Server with those flags; stopped (exit 0
    asserted) at the end of the test unless the test stopped it itself."""
    started = []

    def start(*extra):
        srv = Server(extra)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop(check=True)
