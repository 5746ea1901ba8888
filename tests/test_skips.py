"""The CI rule on skips, run on a tiny suite in a pytest of its own."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TINY = '''
import pytest

def test_runs():
    pass

def test_needs_postgres():
    pytest.skip("PostgreSQL: TEST_DATABASE_URL is not set")

def test_needs_a_cluster():
    pytest.skip("!! Redis Cluster tests SKIPPED: redis-server 6.2 is too old")
'''
BROWSER = '''
import pytest

pytest.skip("!! /usr/bin/chromium is missing: browser tests SKIPPED", allow_module_level=True)

def test_clicks():
    pass
'''


def run_tiny(tmp_path, ci, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not ours: no testpaths, no addopts
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env |= {"PYTHONPATH": str(ROOT), **({"CI": ci} if ci is not None else {})}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.skips", "-p",
                           "no:cacheprovider", "-q", str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


BOTH = {"test_tiny.py": TINY, "test_tiny_browser.py": BROWSER}


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_off_ci_postgres_and_browser_skips_stay_loud_skips(tmp_path, ci):
    done = run_tiny(tmp_path, ci, BOTH)
    assert done.returncode == 0, done.stdout
    assert "SKIPPED 1 tests: PostgreSQL: TEST_DATABASE_URL is not set" in done.stdout
    assert "SKIPPED 1 tests: !! /usr/bin/chromium is missing" in done.stdout
    assert "FAILED on CI" not in done.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_on_ci_a_postgres_or_browser_skip_fails_the_run_and_names_the_tests(tmp_path, ci):
    done = run_tiny(tmp_path, ci, BOTH)
    assert done.returncode == 1, done.stdout
    listed = done.stdout.split("FAILED on CI", 1)[1]
    assert "1 tests skipped for want of PostgreSQL" in done.stdout
    assert "test_tiny.py::test_needs_postgres" in listed
    assert "1 tests skipped for want of Chromium" in done.stdout
    assert "test_tiny_browser.py" in listed
    assert "test_needs_a_cluster" not in listed  # CI may lack redis-server 7


def test_on_ci_other_skips_stay_skips(tmp_path):
    other = TINY.replace('pytest.skip("PostgreSQL: TEST_DATABASE_URL is not set")', "pass")
    done = run_tiny(tmp_path, "true", {"test_tiny.py": other})
    assert done.returncode == 0, done.stdout
    assert "SKIPPED 1 tests: !! Redis Cluster tests SKIPPED" in done.stdout
    assert "FAILED on CI" not in done.stdout
