"""Fixtures for the Python package's tests: the repository's tiny model, images and demo corpus,
and the `sieve` binary (SIEVE_BIN, else target/debug/sieve) to compare against the CLI."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "models" / "tiny-clip"
TINY_DINO = ROOT / "models" / "tiny-dinov2"
DEMO = ROOT / "demo"
IMAGES = ROOT / "tests" / "fixtures" / "images"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the Hugging Face Hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def sieve_bin():
    path = Path(os.environ.get("SIEVE_BIN", ROOT / "target" / "debug" / "sieve"))
    if not path.is_file():
        pytest.fail(f"no sieve binary at {path}: build it (cargo build) or set SIEVE_BIN")
    return path


@pytest.fixture(scope="session")
def cli(sieve_bin):
    """Runs the sieve binary; returns its --json output parsed."""
    import json

    def run(*args):
        out = subprocess.run(
            [str(sieve_bin), *map(str, args), "--json", "--quiet"],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        return json.loads(out.stdout.splitlines()[-1])

    return run


@pytest.fixture(scope="session")
def demo_copy(tmp_path_factory):
    """The demo corpus copied into a temporary folder (so uris are the same for every run)."""
    dest = tmp_path_factory.mktemp("corpus") / "demo"
    shutil.copytree(DEMO, dest)
    return dest
