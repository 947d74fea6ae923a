"""Checkpoint files: what is kept, the fall-back past a damaged newest one, run config reading."""

from __future__ import annotations

import json

import pytest
import torch

from metarim.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_newest_checkpoint,
    read_run_config,
    save_checkpoint,
)


def _save(run, step):
    return save_checkpoint(run, {"algo": "ppo", "step": step, "w": torch.full((3,), float(step))}, step=step)


def _names(run):
    return [p.name for p in list_checkpoints(run)]


def _files(run):
    return {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def test_save_keeps_the_new_checkpoint_and_the_one_before(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step)
    assert _names(tmp_path) == ["ckpt-00000002.pt", "ckpt-00000003.pt"]
    _save(tmp_path, 3)  # the same step again (the final checkpoint of a run) replaces it
    assert _names(tmp_path) == ["ckpt-00000002.pt", "ckpt-00000003.pt"]
    # a newer checkpoint in the folder never makes the one just written or its predecessor go
    (tmp_path / "checkpoints" / "ckpt-00000009.pt").write_bytes(b"stale")
    _save(tmp_path, 4)
    assert _names(tmp_path) == ["ckpt-00000003.pt", "ckpt-00000004.pt", "ckpt-00000009.pt"]
    with pytest.raises(ValueError, match="keep=0"):
        save_checkpoint(tmp_path, {"algo": "ppo"}, step=5, keep=0)


def test_newest_checkpoint_that_loads(tmp_path):
    assert load_newest_checkpoint(tmp_path) is None
    _save(tmp_path, 1)
    newest = _save(tmp_path, 2)
    path, state, skipped = load_newest_checkpoint(tmp_path)
    assert path == newest and state["step"] == 2 and skipped == []
    newest.write_bytes(newest.read_bytes()[:200])  # cut short
    before = _files(tmp_path)
    path, state, skipped = load_newest_checkpoint(tmp_path)
    assert path.name == "ckpt-00000001.pt" and state["step"] == 1
    assert torch.equal(state["w"], torch.ones(3))
    assert [e.path for e in skipped] == [newest] and "corrupt" in str(skipped[0])
    assert _files(tmp_path) == before  # nothing moved or deleted


def test_no_checkpoint_loads_names_the_newest_and_changes_nothing(tmp_path):
    for step in (1, 2):
        _save(tmp_path, step).write_bytes(b"junk")
    before = _files(tmp_path)
    with pytest.raises(CheckpointError) as e:
        load_newest_checkpoint(tmp_path)
    msg = str(e.value)
    assert "ckpt-00000002.pt is corrupt" in msg and "nor does the one before it" in msg and "\n" not in msg
    assert e.value.path == tmp_path / "checkpoints" / "ckpt-00000002.pt"
    assert _files(tmp_path) == before


def test_not_a_metarim_checkpoint(tmp_path):
    path = _save(tmp_path, 1)
    torch.save({"w": torch.ones(1)}, path)  # loads, but no "algo"
    with pytest.raises(CheckpointError, match="not a metarim checkpoint") as e:
        load_newest_checkpoint(tmp_path)
    assert e.value.path == path


@pytest.mark.parametrize("content,needle", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b"[1, 2]", 'no "config" object'),
    (b'{"conf": {}}', 'no "config" object'),
    (b'{"config": 3}', 'no "config" object'),
], ids=["not-json", "binary", "list", "no-config-key", "config-not-object"])
def test_damaged_run_config_is_one_line_naming_file_and_fix(tmp_path, content, needle):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(ValueError) as e:
        read_run_config(tmp_path)
    msg = str(e.value)
    assert needle in msg and str(tmp_path / "config.json") in msg and "\n" not in msg
    assert "restore it from a copy" in msg and "--overwrite" in msg


def test_run_config(tmp_path):
    with pytest.raises(ValueError, match="not a metarim run"):
        read_run_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"config": {"frames": 5}, "seeds": {}}))
    assert read_run_config(tmp_path) == {"config": {"frames": 5}, "seeds": {}}
