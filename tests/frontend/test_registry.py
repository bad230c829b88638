"""The model registry: what the model store may hold, and which version a name means."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import tiny_manifest, tiny_onnx
from trustserve import archive
from trustserve.errors import BadRequest, Conflict, NotFound
from trustserve.files import write_atomic
from trustserve.frontend.registry import ModelRegistry


def put(store: Path, version: str, name: str = "tiny", **extra: object) -> str:
    manifest = tiny_manifest(name, version, **({"extra": extra} if extra else {}))
    filename = f"{name}-{version}.tsm"
    write_atomic(store / filename, archive.pack(manifest, tiny_onnx()))
    return filename


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://example.com/m.tsm", "no network fetch"),
        ("file:///etc/passwd", "no network fetch"),
        ("/etc/passwd", "no absolute path"),
        ("..\\m.tsm", "relative to the model store"),
        ("../outside.tsm", "must stay inside the model store"),
        ("sub/../../outside.tsm", "must stay inside the model store"),
        ("", "must stay inside the model store"),
    ],
)
def test_urls_that_leave_the_store_are_refused(store: Path, url: str, words: str) -> None:
    (store.parent / "outside.tsm").write_bytes(b"x")
    with pytest.raises(BadRequest) as refused:
        ModelRegistry(store).locate(url)
    assert words in str(refused.value)


def test_a_symlink_out_of_the_store_is_refused(store: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.tsm"
    put(tmp_path, "1")
    os.rename(tmp_path / "tiny-1.tsm", target)
    (store / "link.tsm").symlink_to(target)
    with pytest.raises(BadRequest, match="leads outside the model store"):
        ModelRegistry(store).locate("link.tsm")


def test_only_archives_that_exist_are_found(store: Path) -> None:
    (store / "notes.txt").write_text("x")
    registry = ModelRegistry(store)
    for url in ("notes.txt", "missing.tsm"):
        with pytest.raises(NotFound, match="no model archive"):
            registry.locate(url)
    assert registry.locate(put(store, "1")) == (store / "tiny-1.tsm").resolve()


def test_register_resolve_and_unregister(store: Path) -> None:
    registry = ModelRegistry(store)
    entry = registry.register(put(store, "1"), 2)
    assert (entry.queue, entry.min_workers, entry.encrypted) == ("tiny:1", 2, False)
    assert registry.resolve("tiny") is entry and registry.resolve("tiny", "1") is entry
    with pytest.raises(Conflict, match="already registered"):
        registry.register("tiny-1.tsm", 1)
    with pytest.raises(NotFound, match="has no version '2'"):
        registry.resolve("tiny", "2")
    assert registry.unregister("tiny", None) is entry
    with pytest.raises(NotFound, match="unknown model 'tiny'"):
        registry.resolve("tiny")
    assert registry.entries() == [] and registry.versions("tiny") == []


def test_unregistering_one_version_keeps_the_others(store: Path) -> None:
    registry = ModelRegistry(store)
    registry.register(put(store, "1"), 1)
    registry.register(put(store, "2"), 1)
    registry.unregister("tiny", "2")
    assert registry.versions("tiny") == ["1"] and registry.resolve("tiny").manifest.version == "1"


def test_the_default_is_the_greatest_numeric_version(store: Path) -> None:
    registry = ModelRegistry(store)
    for version in ("2", "10", "9"):
        registry.register(put(store, version), 1)
    assert registry.versions("tiny") == ["2", "9", "10"]
    assert registry.default_version("tiny") == "10"


def test_numeric_versions_outrank_named_ones(store: Path) -> None:
    registry = ModelRegistry(store)
    for version in ("beta", "alpha", "1"):
        registry.register(put(store, version), 1)
    assert registry.default_version("tiny") == "1"
    registry.unregister("tiny", "1")
    assert registry.default_version("tiny") == "beta"


def test_a_manifest_can_mark_the_default_version(store: Path) -> None:
    registry = ModelRegistry(store)
    registry.register(put(store, "1", default_version=True), 1)
    registry.register(put(store, "2"), 1)
    assert registry.resolve("tiny").manifest.version == "1"


def test_scan_registers_every_archive_at_the_top_of_the_store(store: Path) -> None:
    put(store, "1")
    put(store, "1", name="other")
    (store / "sub").mkdir()
    put(store / "sub", "2")
    found = ModelRegistry(store).scan(1)
    assert sorted(e.queue for e in found) == ["other:1", "tiny:1"]


def test_a_model_marked_unservable_says_why(store: Path) -> None:
    registry = ModelRegistry(store)
    registry.register(put(store, "1"), 1)
    registry.mark_unservable("tiny:1", "the KMS refused this worker")
    assert registry.resolve("tiny").failed == "the KMS refused this worker"
