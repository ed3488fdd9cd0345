"""Shipped playbooks and templates work from an installed wheel, and `init` copies them out."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_ships_data_and_the_installed_command_validates_every_playbook(
        tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path / "dist"), str(REPO)],
                   check=True)
    wheel = next((tmp_path / "dist").glob("incident-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "incident/py.typed" in names
    assert sum(n.startswith("incident/_data/playbooks/") for n in names) == 6
    assert "incident/_data/incident.yaml.example" in names
    assert "incident/_data/examples/customers.csv" in names
    assert any(n.startswith("incident/_data/templates/system_failure/") for n in names)

    venv = tmp_path / "venv"
    # A plain venv, isolated from the system site-packages (those are the *base* interpreter's,
    # which a fresh machine does not have). Its dependencies come from the test environment's
    # own site-packages, added after the venv's own, so the wheel installed into the venv is
    # what imports as `incident`.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    venv_python = str(venv / "bin" / "python")
    site = subprocess.run([venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site.stdout.strip(), "test-environment.pth").write_text(
        "".join(f"{path}\n" for path in sorted(ours)))
    subprocess.run([sys.executable, "-m", "pip", "--python", venv_python, "install",
                    "--quiet", "--no-deps", "--force-reinstall", str(wheel)], check=True)
    located = subprocess.run([venv_python, "-c", "import incident, rich; print(incident.__file__)"],
                             capture_output=True, text=True, check=True, cwd=tmp_path)
    assert str(venv) in located.stdout and str(REPO) not in located.stdout
    command = str(venv / "bin" / "incident")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # From a folder with no config and no playbooks: only the wheel's data can answer.
    listed = subprocess.run([command, "--json", "playbooks", "list"], cwd=elsewhere,
                            capture_output=True, text=True, check=True)
    paths = [p["path"] for p in json.loads(listed.stdout)]
    assert len(paths) == 6 and all("_data" in p and str(REPO) not in p for p in paths)
    subprocess.run([command, "init", "ops"], cwd=elsewhere, check=True, capture_output=True)
    assert (elsewhere / "ops" / "incident.yaml").is_file()
    assert len(list((elsewhere / "ops" / "playbooks").glob("*.yaml"))) == 6
    checked = subprocess.run([command, "--json", "--config", "ops/incident.yaml", "playbooks",
                              "validate"], cwd=elsewhere, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert all(entry["valid"] for entry in json.loads(checked.stdout))


def test_validate_renders_all_six_playbooks_in_every_language_and_phase(
        tmp_path: Path) -> None:
    from click.testing import CliRunner

    from incident.cli import cli

    result = CliRunner().invoke(cli, ["--json", "playbooks", "validate"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    checks = json.loads(result.stdout)
    assert len(checks) == 6
    for check in checks:
        assert check["valid"], check
        assert set(check["sms"]) == {f"{phase}/{lang}" for phase in
                                     ("initial", "update", "eta_changed", "resolved")
                                     for lang in ("zh-CN", "zh-HK", "en")}
