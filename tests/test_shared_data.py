"""The shared-data helper: one way to find the data, and CI never skips it silently."""

from __future__ import annotations

from pathlib import Path

import pytest
import shared_data as helper


def test_env_var_overrides_the_default(monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "meshes").mkdir()
    monkeypatch.setenv(helper.ENV_VAR, str(tmp_path))
    assert helper.shared_data("meshes") == tmp_path / "meshes"


def test_default_is_beside_the_repository(monkeypatch) -> None:
    monkeypatch.delenv(helper.ENV_VAR, raising=False)
    assert helper.shared_data_root() == helper.REPO_ROOT.parent / "shared" / "data"


def test_missing_data_skips_locally_and_fails_under_ci(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(helper.ENV_VAR, str(tmp_path / "absent"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        helper.shared_data("labeleddb")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        helper.shared_data("labeleddb")


def test_no_test_file_hard_codes_the_data_path() -> None:
    tests = Path(__file__).resolve().parent
    own = {Path(__file__).name, "shared_data.py"}
    offenders = [p.name for p in tests.glob("*.py") if p.name not in own
                 and ("shared/data" in p.read_text() or '"shared" / "data"' in p.read_text())]
    assert offenders == []
