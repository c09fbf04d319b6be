"""SmartJoiner's Python call, against SQLite and tgsim (the loopback Telegram DC) over the real
client path: the module is the one maturin built, the binaries are the workspace's.

SMART_JOINER_BIN_DIR names the directory of the `smart-joiner` and `tgsim` binaries (default:
the workspace's target/debug).
"""

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import time

import pytest

from smart_joiner import SmartJoiner

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("SMART_JOINER_BIN_DIR", ROOT / "target" / "debug"))
GROUPS = ["@rustlovers", "t.me/+AAAAAEhQx3k1bXxv", "@guarded"]
# Paces a few seconds long, above tgsim's 1 s rule, so a test lasts seconds.
FAST = {"JOIN_PAUSE_MIN": "2s", "JOIN_PAUSE_MAX": "3s", "ERROR_PAUSE": "1s"}


def binary(name):
    path = BIN / name
    assert path.exists(), f"{path} is missing: build the workspace first (cargo build)"
    return str(path)


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment: no DATABASE_URL or POSTGRES_* of the caller, fast pacing."""
    for key in list(os.environ):
        if key.startswith("POSTGRES_") or key in ("DATABASE_URL", "ACCOUNTS_CONFIG"):
            monkeypatch.delenv(key)
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.chdir(tmp_path)
    return dict(os.environ)


@pytest.fixture
def tgsim(tmp_path):
    """tgsim with three accounts and three groups, no scripted failures; its accounts file."""
    scenario = tmp_path / "scenario.json"
    subprocess.run([binary("tgsim"), "generate", str(scenario)], check=True)
    data = json.loads(scenario.read_text())
    data["scripts"] = []
    scenario.write_text(json.dumps(data))
    accounts = tmp_path / "accounts_config.json"
    proc = subprocess.Popen(
        [binary("tgsim"), "--scenario", str(scenario), "--write-accounts", str(accounts)],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not accounts.exists():
        assert proc.poll() is None, "tgsim exited"
        assert time.monotonic() < deadline, "tgsim did not start"
        time.sleep(0.05)
    time.sleep(0.2)  # the file is written whole before the line is printed
    yield accounts
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert "0 violation(s)" in out, out


def cli(env, *args):
    return subprocess.run([binary("smart-joiner"), *args], env=env, capture_output=True, text=True)


def test_run_batch_joins_through_the_same_batch_as_the_command_on_sqlite(env, tgsim, tmp_path):
    db = f"sqlite://{tmp_path / 'smart_joiner.db'}?mode=rwc"
    env = {**env, "DATABASE_URL": db}
    assert cli(env, "migrate", "up").returncode == 0
    groups = tmp_path / "groups.txt"
    groups.write_text("\n".join(GROUPS) + "\n")
    ran = cli(env, "targets", "import", str(groups), "--niche", "ukraine_cars")
    assert ran.returncode == 0, ran.stderr

    joiner = SmartJoiner(accounts_config_path=str(tgsim), database_url=db)
    report = asyncio.run(joiner.run_batch(niche="ukraine_cars", batch_size=2))
    assert isinstance(report, dict)
    assert report["niche"] == "ukraine_cars" and report["batch_size"] == 2
    assert report["taken"] == 2 and not report["interrupted"], report
    assert sum(report["by_status"].values()) == 2, report

    # The rest, in the caller's own event loop, beside other work.
    async def scheduler():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        report = await joiner.run_batch(niche="ukraine_cars", batch_size=5)
        ticker.cancel()
        return report, ticks

    report, ticks = asyncio.run(scheduler())
    assert ticks > 1, "run_batch does not block the event loop"
    assert report["taken"] == 1, report

    # What the database says, through the command: every group settled, one account each.
    listed = cli(env, "--json", "targets", "list")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    statuses = sorted(r["status"] for r in rows)
    assert statuses == ["joined", "joined", "requested"], rows
    accounts = [r["assigned_account_id"] for r in rows]
    assert all(accounts), rows

    # SmartJoiner's log lines, in logs/smart_joiner.log as the command writes them (the
    # process's logging is set up by its first batch: this test's LOG_DIR).
    log = (tmp_path / "logs" / "smart_joiner.log").read_text()
    assert "joined @rustlovers with " in log, log


def test_smartjoiners_defaults_and_environment(env, tgsim, tmp_path, monkeypatch):
    # No database_url and no DATABASE_URL: SmartJoiner's POSTGRES_* variables choose Postgres.
    monkeypatch.setenv("POSTGRES_HOST", "127.0.0.1")
    monkeypatch.setenv("POSTGRES_USER", "postgres")
    monkeypatch.setenv("POSTGRES_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("POSTGRES_DB", "sj_py_test_no_such_database")
    joiner = SmartJoiner(accounts_config_path=str(tgsim))
    with pytest.raises(RuntimeError) as err:
        asyncio.run(joiner.run_batch())
    message = str(err.value)
    assert "sj_py_test_no_such_database" in message, message
    assert "hunter2-secret" not in message, message

    # An unmigrated SQLite database is refused with what to do.
    db = f"sqlite://{tmp_path / 'fresh.db'}?mode=rwc"
    with pytest.raises(RuntimeError, match="pending migrations: run `smart-joiner migrate up` first"):
        asyncio.run(SmartJoiner(accounts_config_path=str(tgsim), database_url=db).run_batch())

    # A missing accounts file, and a bad setting, are named.
    with pytest.raises(RuntimeError, match="nowhere.json"):
        asyncio.run(SmartJoiner(accounts_config_path="nowhere.json", database_url=db).run_batch())
    monkeypatch.setenv("JOIN_PAUSE_MIN", "soon")
    with pytest.raises(ValueError, match="JOIN_PAUSE_MIN"):
        SmartJoiner(accounts_config_path=str(tgsim), database_url=db)
