"""A throwaway Synapse homeserver on 127.0.0.1 for the Matrix tests and benchmarks.

Synapse lives in its own venv (infra/synapse/setup.sh) because its pins would fight the
project's. This module only drives it as a subprocess: generate a config, start, register
users through the shared-secret admin API, stop. No federation, SQLite, rate limits raised
(or, with `default_rate_limits`, Synapse's own, as a real homeserver has them).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "infra" / "synapse" / "setup.sh"
SERVER_NAME = "localhost"
SHARED_SECRET = "confidante-test-shared-secret"

OVERRIDES = """
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
registration_shared_secret: "{secret}"
enable_registration: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
use_presence: false
# test passwords: cheap hashing keeps registering and logging in fast
bcrypt_rounds: 4
report_stats: false
enable_metrics: false
url_preview_enabled: false
"""

# Raised so tests never trip them by accident; one test lowers a single user's message limit
# through the admin API on purpose, and one server keeps Synapse's defaults.
RAISED_LIMITS = """
rc_message: {{per_second: 1000, burst_count: 10000}}
rc_registration: {{per_second: 1000, burst_count: 10000}}
rc_login:
  address: {{per_second: 1000, burst_count: 10000}}
  account: {{per_second: 1000, burst_count: 10000}}
  failed_attempts: {{per_second: 1000, burst_count: 10000}}
rc_joins:
  local: {{per_second: 1000, burst_count: 10000}}
  remote: {{per_second: 1000, burst_count: 10000}}
rc_joins_per_room: {{per_second: 1000, burst_count: 10000}}
rc_invites:
  per_room: {{per_second: 1000, burst_count: 10000}}
  per_user: {{per_second: 1000, burst_count: 10000}}
  per_issuer: {{per_second: 1000, burst_count: 10000}}
rc_admin_redaction: {{per_second: 1000, burst_count: 10000}}
rc_room_creation: {{per_second: 1000, burst_count: 10000}}
rc_key_requests: {{per_second: 1000, burst_count: 10000}}
rc_3pid_validation: {{per_second: 1000, burst_count: 10000}}
rc_media_create: {{per_second: 1000, burst_count: 10000}}
rc_delayed_event_mgmt: {{per_second: 1000, burst_count: 10000}}
rc_reports: {{per_second: 1000, burst_count: 10000}}
"""

LOG_CONFIG = """
version: 1
formatters:
  precise: {{format: '%(asctime)s %(name)s %(levelname)s %(message)s'}}
handlers:
  file: {{class: logging.FileHandler, formatter: precise, filename: '{path}'}}
root: {{level: WARNING, handlers: [file]}}
disable_existing_loggers: false
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_installed() -> Path:
    """Run the idempotent setup script; return the Synapse venv's python."""
    venv = Path(os.environ.get("SYNAPSE_VENV", ROOT / ".venv-synapse"))
    python = venv / "bin" / "python"
    if not python.exists():
        result = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(
                "Installing Synapse failed; run `bash infra/synapse/setup.sh` to see why.\n"
                + result.stderr[-2000:]
            )
    return python


@dataclass
class Registered:
    user_id: str
    password: str
    access_token: str
    device_id: str


class Homeserver:
    """One Synapse process; `url` is its client API base."""

    def __init__(self, workdir: Path, *, default_rate_limits: bool = False) -> None:
        self.workdir = workdir
        self.default_rate_limits = default_rate_limits
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0
        self._admin_token: str | None = None
        self._launched = 0.0

    def _template(self, python: Path) -> Path:
        """`--generate-config` once per Synapse install (it takes seconds); servers copy it."""
        template = python.parent.parent / "template"
        base = template / "homeserver.yaml"
        if not base.exists():
            tmp = template.with_name(f"template.{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            subprocess.run(
                [
                    str(python), "-m", "synapse.app.homeserver",
                    "--server-name", SERVER_NAME,
                    "--config-path", str(tmp / "homeserver.yaml"),
                    "--data-directory", str(tmp),
                    "--generate-config", "--report-stats=no",
                ],
                check=True, capture_output=True, cwd=tmp, timeout=120,
            )  # fmt: skip
            try:
                tmp.rename(template)
            except OSError:  # another session made it first
                shutil.rmtree(tmp, ignore_errors=True)
        return template

    def _configure(self, python: Path) -> list[Path]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        template = self._template(python)
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        key = self.workdir / "signing.key"
        shutil.copy(next(template.glob("*.signing.key")), key)
        log_config = self.workdir / "log.yaml"
        log_config.write_text(LOG_CONFIG.format(path=self.workdir / "homeserver.log"))
        overrides = self.workdir / "overrides.yaml"
        overrides.write_text(
            OVERRIDES.format(port=self.port, secret=SHARED_SECRET)
            + ("" if self.default_rate_limits else RAISED_LIMITS.format())
            + f"pid_file: '{data / 'homeserver.pid'}'\n"
            + f"signing_key_path: '{key}'\n"
            + f"media_store_path: '{data / 'media_store'}'\n"
            + f"log_config: '{log_config}'\n"
            + f"database: {{name: sqlite3, args: {{database: '{data / 'homeserver.db'}'}}}}\n"
        )
        return [template / "homeserver.yaml", overrides]

    def launch(self) -> None:
        """Start the process and return at once; `wait_ready` waits for it to answer."""
        python = ensure_installed()
        configs = self._configure(python)
        self._launched = time.monotonic()
        args = [str(python), "-m", "synapse.app.homeserver"]
        for c in configs:
            args += ["-c", str(c)]
        self._stderr = open(self.workdir / "stderr.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=self._stderr, stderr=self._stderr)

    def wait_ready(self, timeout: float = 240.0, stall: float = 60.0) -> None:
        """Wait until the client API answers. A first start on a fresh install has been seen to
        stall silently after its banner; a server that says nothing for `stall` seconds is
        relaunched once (new port, new database) before giving up."""
        if self.proc is None:
            self.launch()
        assert self.proc is not None
        # launched early (at the test session's start) and asked much later: the wait counts
        # from now, so a server that has long been up is not given up on unasked
        deadline = time.monotonic() + timeout
        relaunched = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Synapse exited with {self.proc.returncode}; see {self.workdir}/stderr.log and homeserver.log"
                )
            try:
                if httpx.get(f"{self.url}/_matrix/client/versions", timeout=1).status_code == 200:
                    if not self.start_seconds:
                        self.start_seconds = time.monotonic() - self._launched
                    return
            except httpx.HTTPError:
                pass
            if not relaunched and time.monotonic() - self._launched > stall:
                relaunched = True
                self.stop()
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                shutil.rmtree(self.workdir / "data", ignore_errors=True)
                self.launch()
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Synapse did not answer within {timeout:.0f}s; see {self.workdir}/homeserver.log")

    def start(self, timeout: float = 240.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_stderr", None):
            self._stderr.close()
            self._stderr = None

    def register(self, localpart: str, password: str | None = None, admin: bool = False) -> Registered:
        """Shared-secret registration (what `register_new_matrix_user` does)."""
        password = password or f"pw-{localpart}-{os.getpid()}"
        endpoint = f"{self.url}/_synapse/admin/v1/register"
        nonce = httpx.get(endpoint, timeout=10).json()["nonce"]
        digest = hmac.new(
            SHARED_SECRET.encode(),
            b"\x00".join(p.encode() for p in (nonce, localpart, password, "admin" if admin else "notadmin")),
            hashlib.sha1,
        ).hexdigest()
        body = {"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": digest}
        resp = httpx.post(endpoint, json=body, timeout=30)
        if resp.status_code != 200:
            raise RuntimeError(f"registering {localpart} failed: {resp.status_code} {resp.text}")
        data = resp.json()
        return Registered(data["user_id"], password, data["access_token"], data["device_id"])

    def admin_token(self) -> str:
        if self._admin_token is None:
            self._admin_token = self.register(f"admin{os.getpid()}", admin=True).access_token
        return self._admin_token

    def set_message_ratelimit(self, user_id: str, per_second: float, burst: int) -> None:
        """Give one user a tight message rate limit (admin API), to exercise M_LIMIT_EXCEEDED."""
        resp = httpx.post(
            f"{self.url}/_synapse/admin/v1/users/{user_id}/override_ratelimit",
            json={"messages_per_second": per_second, "burst_count": burst},
            headers={"Authorization": f"Bearer {self.admin_token()}"},
            timeout=10,
        )
        resp.raise_for_status()


def remove(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
