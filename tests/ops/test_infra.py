"""The deployment files in infra/ name only what exists: every `confidante` command line in the
compose file, the systemd units and the Dockerfile parses against the real CLI, and the compose
file is valid YAML with the services and health checks the README promises."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import typer
import yaml

from app.cli import app

INFRA = Path(__file__).resolve().parents[2] / "infra"
CLI = typer.main.get_command(app)


def _parse(argv: list[str]) -> str:
    """Parse a command line as `confidante` would, without running it; returns the subcommand."""
    assert argv[0].endswith("confidante"), argv
    name, rest = argv[1], argv[2:]
    sub = CLI.get_command(click.Context(CLI), name)
    if sub is None:
        raise LookupError(f"no command {name!r}")
    sub.make_context(name, list(rest))  # unknown options or bad values raise UsageError
    return name


def _compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def _unit_commands() -> list[tuple[str, list[str]]]:
    found = []
    for unit in sorted((INFRA / "systemd").glob("*.service")):
        for line in unit.read_text().splitlines():
            key, _, value = line.partition("=")
            if key in ("ExecStart", "ExecStartPre", "ExecStartPost") and "confidante" in value.split()[0]:
                found.append((unit.name, shlex.split(value)))
    return found


def test_compose_parses_and_runs_one_beat_with_health_checks() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"redis", "bot", "worker", "beat"} <= set(services)
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(v.startswith("redis-data:") for v in services["redis"]["volumes"])
    assert "inspect ping" in " ".join(services["worker"]["healthcheck"]["test"])
    assert services["flower"]["profiles"] == ["flower"] and services["vllm"]["profiles"] == ["vllm"]
    beats = [n for n, s in services.items() if "command" in s and "beat" in s["command"][1:2]]
    assert beats == ["beat"]
    for name, service in services.items():
        command = service.get("command", [])
        if command[:2] == ["confidante", "worker"]:
            assert "--no-beat" in command, f"{name} would run a second beat"
    assert set(compose["volumes"]) == {"confidante-data", "redis-data"}


def test_every_confidante_command_named_in_infra_exists() -> None:
    commands = [
        (f"compose:{n}", s["command"])
        for n, s in _compose()["services"].items()
        if s.get("command", [""])[0] == "confidante"
    ]
    commands += _unit_commands()
    dockerfile = (INFRA / "Dockerfile").read_text()
    commands += [
        ("Dockerfile", shlex.split(m)) for m in re.findall(r"(?:RUN|&&) (confidante [a-z-]+)", dockerfile)
    ]
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    commands.append(("Dockerfile CMD", yaml.safe_load(cmd.group(1))))
    named = {_parse(argv) for _, argv in commands}
    assert {"run", "worker", "beat", "backup", "prepare"} <= named
    # and the check itself can fail: a command or option the CLI does not have
    with pytest.raises(LookupError):
        _parse(["confidante", "wroker"])
    with pytest.raises(Exception, match="No such option: --no-beats"):
        _parse(["confidante", "worker", "--no-beats"])


def test_celery_app_the_health_check_names_exists() -> None:
    test = " ".join(_compose()["services"]["worker"]["healthcheck"]["test"])
    module, attribute = re.search(r"-A ([\w.]+):(\w+)", test).groups()
    assert getattr(__import__(module, fromlist=[attribute]), attribute).main == "confidante"


def test_stop_timeouts_leave_room_for_the_shutdown_grace() -> None:
    unit = (INFRA / "systemd" / "confidante.service").read_text()
    grace = int(re.search(r"CONFIDANTE_SHUTDOWN_GRACE_SECONDS=(\d+)", unit).group(1))
    assert grace == 20 and int(re.search(r"TimeoutStopSec=(\d+)", unit).group(1)) > grace
    compose = _compose()["services"]["bot"]
    assert compose["environment"]["CONFIDANTE_SHUTDOWN_GRACE_SECONDS"] == "20"
    assert int(compose["stop_grace_period"].rstrip("s")) > grace


def test_image_pins_cpu_torch_runs_unprivileged_and_checks_health() -> None:
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in dockerfile
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", dockerfile, re.M)
