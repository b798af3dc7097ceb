"""The one versioned-folder rule the router artefacts and the student registry share."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.versions import next_version, staged_version, version_names
from distill.promote import Registry


def test_versions_sort_as_numbers_and_only_complete_ones_count(tmp_path: Path) -> None:
    for name in ("v0002", "v10000", "v9999", "notes", ".v0003.staging"):
        (tmp_path / name).mkdir()
    (tmp_path / "v0010").write_text("a file, not a version")
    assert version_names(tmp_path) == ["v0002", "v9999", "v10000"]
    assert next_version(version_names(tmp_path)) == "v10001" and next_version([]) == "v0001"
    assert version_names(tmp_path, lambda p: p.name != "v9999") == ["v0002", "v10000"]


def test_a_version_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    with staged_version(tmp_path, "v0001") as staging:
        staging.mkdir()
        (staging / "model").write_text("weights")
        assert version_names(tmp_path) == []  # not visible while staged
    assert (tmp_path / "v0001" / "model").read_text() == "weights"
    with pytest.raises(RuntimeError), staged_version(tmp_path, "v0002") as staging:
        staging.mkdir()
        raise RuntimeError("the copy failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v0001"]


def test_the_student_registry_numbers_past_9999(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    source = tmp_path / "adapter"
    source.mkdir()
    (source / "adapter_config.json").write_text("{}")
    for name in ("v9999", "v10000"):
        (registry.root / name).mkdir(parents=True)
        (registry.root / name / "manifest.json").write_text(f'{{"version": "{name}"}}')
    assert registry.versions() == ["v9999", "v10000"]  # sorted as text, v10000 came first
    assert registry.add(source, {}).name == "v10001"
