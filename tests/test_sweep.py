"""``metarim sweep``: sweep files, run folders identical to ``metarim train``, resume, Ray."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from metarim.checkpoint import list_checkpoints, load_checkpoint
from metarim.cli import main
from metarim.sweep import run_sweep
from metarim.sweep.run import RunLock, run_state, train_run
from metarim.sweep.spec import expand_sweep, load_sweep

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "sweeps" / "tiny.json"  # 2 learners x 2 seeds, 2,048 frames
TIME_COLUMNS = {"fps", "collect_s", "update_s"}


def _rows(path: pathlib.Path) -> list[dict[str, str]]:
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in csv.DictReader(f)]


def _same_tree(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_tree(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_run(a: pathlib.Path, b: pathlib.Path) -> None:
    """Same config, metrics (but wall-clock columns), vocab and checkpoints, bit for bit."""
    assert json.loads((a / "config.json").read_text())["config"] == json.loads((b / "config.json").read_text())["config"]
    assert _rows(a / "metrics.csv") == _rows(b / "metrics.csv")
    assert (a / "vocab.json").read_text() == (b / "vocab.json").read_text()
    ca, cb = list_checkpoints(a), list_checkpoints(b)
    assert [p.name for p in ca] == [p.name for p in cb] and ca
    for pa, pb in zip(ca, cb):
        assert _same_tree(load_checkpoint(pa), load_checkpoint(pb)), pa.name
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The tiny sweep's runs, one after the other, with ``metarim train --config``."""
    root = tmp_path_factory.mktemp("sequential")
    for run in expand_sweep(load_sweep(TINY)):
        cfg = root / f"{run.name}.json"
        cfg.write_text(json.dumps(run.config))
        assert main(["train", "--config", str(cfg), "--out", str(root / run.name), "--quiet"]) == 0
    return root


def test_expand_sweep_precedence_and_names() -> None:
    spec = {"base": {"frames": 4096, "lr": 0.1}, "learners": {"a": {"lr": 0.2}, "b": {}},
            "levels": ["BabyAI-GoToLocalS6N2-v0", "MiniGrid-DoorKey-5x5-v0"], "seeds": [3],
            "grid": {"lr": [0.3, 0.4], "num_envs": [8]}}
    runs = expand_sweep(spec)
    assert len(runs) == 2 * 2 * 2
    assert runs[0].name == "a-GoToLocalS6N2-lr0.3-numenvs8-s3"
    assert runs[0].group == "a-GoToLocalS6N2-lr0.3-numenvs8" and runs[0].learner == "a"
    assert {r.config["lr"] for r in runs} == {0.3, 0.4}  # grid > learner > base
    assert all(r.config["frames"] == 4096 and r.config["seed"] == 3 for r in runs)
    assert len({r.name for r in runs}) == len(runs)


def test_yaml_sweep_file_reads_like_json(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("yaml", reason="PyYAML is not installed (YAML sweep files need it)")
    path = tmp_path / "s.yaml"
    path.write_text("learners:\n  lstm: {memory: lstm}\nseeds: [0, 1]\nbase:\n  frames: 4096\n")
    assert load_sweep(path) == {"learners": {"lstm": {"memory": "lstm"}}, "seeds": [0, 1], "base": {"frames": 4096}}
    (tmp_path / "bad.yml").write_text("learners: [")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_sweep(tmp_path / "bad.yml")


@pytest.mark.parametrize("spec, message", [
    ({"seeds": [0]}, "'learners' must be"),
    ({"learners": {"a": {}}, "seeds": []}, "'seeds' must be"),
    ({"learners": {"a": {}}, "seeds": [0], "grids": {}}, "unknown key(s) ['grids']"),
    ({"learners": {"a": {"seed": 1}}, "seeds": [0]}, "set 'seed' through"),
    ({"learners": {"a": {"frame": 1}}, "seeds": [0]}, "run a-s0: unknown config key 'frame'"),
    ({"learners": {"a b": {}, "a_b": {}}, "seeds": [0]}, "run names collide"),
])
def test_expand_sweep_refuses_bad_specs(spec: dict, message: str) -> None:
    with pytest.raises(ValueError) as e:
        expand_sweep(spec)
    assert message in str(e.value)


@pytest.mark.parametrize("text, extra, message", [
    ("{", [], "is not valid JSON"),
    ('{"learners": {"a": {"algo": "nope"}}, "seeds": [0]}', [], "unknown algo 'nope'"),
    ('{"learners": {"a": {}}, "seeds": [0], "levels": ["Nope-v0"]}', [], "Nope-v0"),
    ('{"learners": {"a": {}}, "seeds": [0]}', ["--max-parallel", "0"], "max_parallel=0 must be >= 1"),
    ('{"learners": {"a": {}}, "seeds": [0]}', ["--address", "auto"], "--address needs --backend ray"),
])
def test_cli_sweep_bad_input_is_one_line(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                                         text: str, extra: list[str], message: str) -> None:
    spec = tmp_path / "s.json"
    spec.write_text(text)
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--config", str(spec), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("metarim: error:") and message in err
    assert err.count("\n") == 1 and not (tmp_path / "o" / "runs").exists()


def test_ray_backend_without_ray_names_the_extra(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--config", str(TINY), "--out", str(tmp_path / "o"), "--backend", "ray"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "metarim: error: --backend ray needs the optional extra: pip install 'metarim[ray]'\n"


def test_busy_run_is_not_trained_twice(tmp_path: pathlib.Path) -> None:
    run = expand_sweep(load_sweep(TINY))[0]
    lock = tmp_path / ".locks" / "x.lock"
    with RunLock(lock) as held:
        assert held.acquired
        with RunLock(lock) as other:
            assert not other.acquired  # flock is per open file, so this holds within a process too
        res = train_run(run.config, tmp_path / "x", lock=lock)
    assert res["status"] == "busy" and not (tmp_path / "x").exists()


def test_failed_run_does_not_stop_the_others(tmp_path: pathlib.Path) -> None:
    base = {"frames": 128, "num_envs": 4, "num_steps": 32, "batch_size": 64, "hidden_size": 32, "epochs": 1}
    # the tensor backend has no FourRooms: this run fails inside its worker, after the checks
    runs = expand_sweep({"base": base, "learners": {"broken": {"env_backend": "tensor"}, "ok": {}},
                         "levels": ["MiniGrid-FourRooms-v0"], "seeds": [0]})
    conflict = tmp_path / "runs" / "ok-s1"
    results = run_sweep(runs, tmp_path, max_parallel=2, log=lambda s: None)
    assert results["broken-s0"]["status"] == "failed" and "not supported by the tensor env" in results["broken-s0"]["error"]
    assert results["ok-s0"]["status"] == "done" and run_state(tmp_path / "runs" / "ok-s0", runs[1].config) == "done"
    status = json.loads((tmp_path / "sweep-status.json").read_text())
    assert status["results"]["broken-s0"]["status"] == "failed"
    # a folder holding another config is refused, never overwritten
    other = expand_sweep({"base": base, "learners": {"ok": {"lr": 0.1}}, "seeds": [1]})
    conflict.mkdir(parents=True)
    (conflict / "config.json").write_text(json.dumps({"config": runs[1].config}))
    assert run_sweep(other, tmp_path, log=lambda s: None)["ok-s1"]["status"] == "failed"
    assert json.loads((conflict / "config.json").read_text())["config"] == runs[1].config


def _wait(cond: object, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        assert time.monotonic() < deadline, "timed out waiting for the sweep"
        time.sleep(0.1)


def test_local_sweep_killed_and_rerun_matches_sequential(tmp_path: pathlib.Path, sequential: pathlib.Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    runs = expand_sweep(load_sweep(TINY))
    first, second = (tmp_path / "runs" / r.name for r in runs[:2])
    proc = subprocess.Popen([sys.executable, "-m", "metarim.cli", "sweep", "--config", str(TINY), "--out",
                             str(tmp_path), "--max-parallel", "1"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # SIGKILL the whole sweep once run 1 is finished and run 2 has a checkpoint
        _wait(lambda: run_state(first, runs[0].config) == "done" and list_checkpoints(second), proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert run_state(second, runs[1].config) == "partial"
    stamp = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    assert main(["sweep", "--config", str(TINY), "--out", str(tmp_path), "--max-parallel", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == {"out": str(tmp_path), "runs": 4, "skipped": 1, "done": 3}
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*")} == stamp  # not repeated, not touched
    for run in runs:
        assert_same_run(tmp_path / "runs" / run.name, sequential / run.name)
    # idempotent: a third invocation trains nothing
    assert main(["sweep", "--config", str(TINY), "--out", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 4
    assert main(["sweep-report", str(tmp_path), "--window", "1"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["summary"]) == ["lstm", "rim"] and len(summary["runs"]) == 4
    assert summary["summary"]["rim"]["final_return"]["n"] == 2
    assert (tmp_path / "summary.md").read_text().startswith("## Sweep") and (tmp_path / "curves.png").stat().st_size
    # cut at the first row with a success rate: each run's final success is its last value
    # at or below the cut (curves this short have a one-row "last tenth")
    cols = {r: list(csv.DictReader((tmp_path / "runs" / r / "metrics.csv").read_text().splitlines()))
            for r in ("lstm-s0", "lstm-s1")}
    cut_at = next(float(r["frames"]) for r in cols["lstm-s0"] if r["success_rate"] != "nan")
    assert cut_at < float(cols["lstm-s0"][-1]["frames"])
    assert main(["sweep-report", str(tmp_path), "--window", "1", "--max-frames", str(cut_at)]) == 0
    cut = json.loads((tmp_path / "summary.json").read_text())
    assert cut["max_frames"] == cut_at and len(cut["runs"]) == 4
    assert all(r["complete"] for r in cut["runs"])  # complete at the cut budget
    expected = [float([r for r in rows if float(r["frames"]) <= cut_at][-1]["success_rate"]) for rows in cols.values()]
    assert cut["summary"]["lstm"]["final_success"]["values"] == pytest.approx(expected)
    assert "curves cut at" in (tmp_path / "summary.md").read_text()
    with pytest.raises(SystemExit) as exc:
        main(["sweep-report", str(tmp_path), "--max-frames", "-5"])
    assert exc.value.code == 2 and "--max-frames -5 must be > 0" in capsys.readouterr().err


def test_ray_sweep_matches_sequential(tmp_path: pathlib.Path, sequential: pathlib.Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'metarim[ray]')")
    runs = expand_sweep(load_sweep(TINY))
    # run 0 finished earlier; run 1 killed after its first checkpoint: its folder goes to the worker
    shutil.copytree(sequential / runs[0].name, tmp_path / "runs" / runs[0].name)
    partial = shutil.copytree(sequential / runs[1].name, tmp_path / "runs" / runs[1].name)
    list_checkpoints(partial)[-1].unlink()
    assert run_state(partial, runs[1].config) == "partial"
    results = run_sweep(runs, tmp_path, backend="ray", max_parallel=2, log=lambda s: None)
    assert [results[r.name]["status"] for r in runs] == ["skipped", "done", "done", "done"]
    for run in runs:
        assert_same_run(tmp_path / "runs" / run.name, sequential / run.name)
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]  # no leftovers


def test_ctrl_c_checkpoints_running_runs_and_starts_no_new_one(tmp_path: pathlib.Path) -> None:
    runs = expand_sweep(load_sweep(TINY))
    folders = [tmp_path / "runs" / r.name for r in runs]
    proc = subprocess.Popen([sys.executable, "-m", "metarim.cli", "sweep", "--config", str(TINY), "--out",
                             str(tmp_path), "--max-parallel", "2"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # Ctrl-C reaches the whole process group, as from a terminal
        _wait(lambda: all(list_checkpoints(f) for f in folders[:2]), proc)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    status = json.loads((tmp_path / "sweep-status.json").read_text())
    assert not status["finished"]
    assert [status["results"][r.name]["status"] for r in runs[2:]] == ["not started"] * 2
    assert not folders[2].exists() and not folders[3].exists()
    for run, folder in zip(runs[:2], folders):  # stopped with a final checkpoint, or had just finished
        assert status["results"][run.name]["status"] in ("interrupted", "done")
        assert run_state(folder, run.config) in ("partial", "done")


def test_worker_killed_by_a_signal_fails_only_its_run(tmp_path: pathlib.Path) -> None:
    import threading

    runs = expand_sweep({**load_sweep(TINY), "seeds": [0]})
    lock = tmp_path / ".locks" / f"{runs[0].name}.lock"
    results: dict = {}
    sweep = threading.Thread(target=lambda: results.update(run_sweep(runs, tmp_path, max_parallel=2,
                                                                     log=lambda s: None)))
    sweep.start()
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().endswith("\n")):  # the lock holder writes its pid
        assert time.monotonic() < deadline and sweep.is_alive()
        time.sleep(0.05)
    os.kill(int(lock.read_text().split()[1]), signal.SIGKILL)
    sweep.join(timeout=120)
    assert results[runs[0].name]["status"] == "failed"
    assert results[runs[0].name]["error"] == "worker process died (exit code -9)"
    assert results[runs[1].name]["status"] == "done"


def test_run_saved_before_a_config_field_existed_is_not_a_conflict(tmp_path: pathlib.Path) -> None:
    """A field added later takes its default when an older run folder is compared; a real
    difference (or a field the code no longer knows) stays a conflict."""
    from metarim.config import TrainConfig

    config = TrainConfig(env="BabyAI-GoToLocalS6N2-v0", frames=4096).to_dict()
    folder = tmp_path / "run"
    folder.mkdir()
    old = {k: v for k, v in config.items() if k != "env_worker"}  # as saved before commit 0d5993d
    (folder / "config.json").write_text(json.dumps({"config": old}))
    assert run_state(folder, config) == "new"  # no checkpoint yet, but no conflict
    assert run_state(folder, {**config, "frames": 8192}) == "new"
    assert run_state(folder, {**config, "lr": config["lr"] * 2}) == "conflict"
    assert run_state(folder, {**config, "env_worker": True}) == "conflict"
    (folder / "config.json").write_text(json.dumps({"config": {**old, "no_such_field": 1}}))
    assert run_state(folder, config) == "conflict"
