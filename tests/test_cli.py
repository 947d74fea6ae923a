"""The ``metarim`` command line: smoke runs, resume, and a table of bad inputs."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest
import torch

from metarim.cli import main

SMALL = ["--env", "MiniGrid-DoorKey-5x5-v0", "--num-envs", "4", "--num-steps", "32",
         "--batch-size", "64", "--hidden-size", "32", "--epochs", "2", "--quiet"]
TIME_COLUMNS = {"fps", "collect_s", "update_s"}


def _train(out, *extra):
    assert main(["train", "--out", str(out), *SMALL, *extra]) == 0


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    _train(out, "--frames", "1024", "--checkpoint-every", "2")
    return out


def test_train_writes_run_folder(run):
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["frames"] == 1024 and cfg["config"]["num_envs"] == 4
    assert {"torch", "minigrid", "gymnasium"} <= set(cfg["versions"])
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and float(rows[-1]["frames"]) == 1024
    assert {"frames", "return_mean", "success_rate", "fps"} <= set(rows[0])
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["ckpt-00000006.pt", "ckpt-00000008.pt"]  # the last two, no temp files
    assert json.loads((run / "vocab.json").read_text())["words"][:2] == ["go", "to"]


def test_eval_prints_json(run, capsys):
    assert main(["eval", "--run", str(run), "--episodes", "6", "--num-envs", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["episodes"] == 6 and 0.0 <= res["success_rate"] <= 1.0
    lo, hi = res["success_rate_ci95"]
    assert lo <= res["success_rate"] <= hi
    assert res["return_mean_ci95"][0] <= res["return_mean"] <= res["return_mean_ci95"][1]
    assert res["frames"] == 1024


def test_eval_fast_adaptation_and_zero_shot(run, capsys):
    from metarim.evaluation.adaptation import adaptation_report
    from metarim.evaluation.evaluate import load_run

    argv = ["eval", "--run", str(run), "--episodes", "4", "--num-envs", "2", "--adapt-steps", "0", "1",
            "--zero-shot", "BabyAI-GoToLocalS6N2-v0"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["episodes"] == 4 and set(res["adaptation"]) == {"0", "1"}
    assert set(res["zero_shot"]) == {"BabyAI-GoToLocalS6N2-v0"}
    for r in [*res["adaptation"].values(), *res["zero_shot"].values()]:
        assert r["episodes"] == 4 and 0.0 <= r["success_rate"] <= 1.0
    # the same numbers as the library function (same seeds), and k=1 really adapted
    config, policy, vocab, _ = load_run(run)
    lib = adaptation_report(config, policy, vocab, adapt_steps=[0, 1],
                            zero_shot_levels=["BabyAI-GoToLocalS6N2-v0"], episodes=4, seed=1_000_003)
    assert json.loads(json.dumps(lib)) == {k: res[k] for k in lib}
    assert res["adaptation"]["0"]["adapt_loss"] != res["adaptation"]["0"]["adapt_loss"]  # NaN: no update
    assert res["adaptation"]["1"]["adapt_loss"] == res["adaptation"]["1"]["adapt_loss"]  # a finite loss


def test_render_writes_gif(run, tmp_path, capsys):
    gif = tmp_path / "agent.gif"
    assert main(["render", "--run", str(run), "--out", str(gif), "--env",
                 "BabyAI-GoToLocalS6N2-v0"]) == 0
    from PIL import Image

    with Image.open(gif) as img:  # PIL merges identical consecutive frames
        assert 2 <= img.n_frames <= json.loads(capsys.readouterr().out)["frames"]
        assert img.size[0] >= 384


def test_resume_matches_uninterrupted_run(tmp_path):
    _train(tmp_path / "full", "--frames", "768", "--checkpoint-every", "1")
    _train(tmp_path / "part", "--frames", "384", "--checkpoint-every", "1")
    assert main(["train", "--out", str(tmp_path / "part"), "--resume", "--frames", "768", "--quiet"]) == 0
    assert _rows(tmp_path / "part" / "metrics.csv") == _rows(tmp_path / "full" / "metrics.csv")


def test_resume_after_kill_cuts_uncovered_rows(tmp_path):
    out = tmp_path / "r"
    _train(out, "--frames", "1024", "--checkpoint-every", "3")  # 8 updates, ckpts 6 and 8 kept
    ref = _rows(out / "metrics.csv")
    # state of a run killed while writing row 8, before checkpoint 8: row 7 is not covered
    lines = (out / "metrics.csv").read_text().splitlines(keepends=True)
    (out / "metrics.csv").write_text("".join(lines[:8]) + lines[8][:10])
    (out / "checkpoints" / "ckpt-00000008.pt").unlink()
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    assert _rows(out / "metrics.csv") == ref


BAD = [
    (["train", "--algo", "nope"], "unknown --algo"),
    (["train", "--memory", "gru"], "unknown --memory"),
    (["train", "--env", "BabyAI-GoToLocl-v0"], "did you mean"),
    (["train", "--frames", "0"], "frames=0"),
    (["train", "--num-envs", "-2"], "num_envs=-2"),
    (["train", "--lr", "0"], "lr=0"),
    (["train", "--lr", "abc"], "invalid float"),
    (["train", "--memory", "rim", "--k", "5"], "k=5"),
    (["train", "--recurrence", "5"], "recurrence=5"),
    (["train", "--combine", "sum"], "combine"),
    (["train", "--algo", "reptile", "--compile"], "drop --compile"),
    (["train", "--learnable-lr"], "learnable_lr=True is Meta-RIM's"),
    (["train", "--bogus"], "unrecognized"),
    (["train", "--resume"], "not a metarim run"),
    (["train", "--resume", "--overwrite"], "exclude"),
    (["eval", "--run", "MISSING"], "not a metarim run"),
    (["eval", "--episodes", "0"], "episodes"),
    (["eval", "--adapt-steps", "0", "-1"], "--adapt-steps -1 must be >= 0"),
    (["eval", "--zero-shot", "BabyAI-GoToLocl-v0"], "did you mean"),
    (["render", "--out", "x.png"], ".gif"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_exit_2(argv, needle, tmp_path, capsys, run):
    if argv[0] == "train":
        argv = [*argv, "--out", str(tmp_path / "new")]
    elif argv[0] in ("eval", "render") and "--run" not in argv:
        argv = [*argv, "--run", str(run)]
    argv = [str(tmp_path / a) if a in ("MISSING", "x.png") else a for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.count("\n") == 1 and err.startswith("metarim: error: ") and needle in err
    assert not (tmp_path / "new").exists()


def test_bad_config_file(tmp_path, capsys):
    for content, needle in [('{"frame": 10}', "did you mean 'frames'"), ('{"frames": "many"}', "frames='many'"),
                            ("{not json", "not valid JSON"), ("[1]", "JSON object")]:
        (tmp_path / "c.json").write_text(content)
        with pytest.raises(SystemExit):
            main(["train", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err


def test_existing_run_is_not_overwritten(run, capsys):
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as e:
        main(["train", "--out", str(run), *SMALL, "--frames", "512"])
    assert e.value.code == 2 and "--resume" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_corrupt_checkpoint(tmp_path, capsys):
    out = tmp_path / "r"
    _train(out, "--frames", "128")
    ckpt = next((out / "checkpoints").iterdir())
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    for argv in (["eval", "--run", str(out)], ["train", "--out", str(out), "--resume"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and "corrupt" in err and err.count("\n") == 1


def test_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "metarim.cli", "train", "--out", str(tmp_path / "o"),
                           "--memory", "gru"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["metarim: error: unknown --memory 'gru'; choose one of ['lstm', 'rim']"]


@pytest.mark.parametrize("worker", [False, True], ids=["in-process", "env-worker"])
def test_sigint_stops_cleanly_and_resumes(tmp_path, worker):
    """Ctrl-C: with the env worker, a terminal sends SIGINT to the whole process group, the
    worker included; the worker must leave it to the trainer, which checkpoints through it."""
    import os
    import signal
    import time

    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "metarim.cli", "train", "--out", str(out), *SMALL,
           "--frames", "100000", "--checkpoint-every", "1000", *(["--env-worker"] if worker else [])]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (out / "metrics.csv").is_file() or len((out / "metrics.csv").read_text().splitlines()) < 3:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "resume with: metarim train --resume --out" in err
    rows = _rows(out / "metrics.csv")
    (ckpt,) = (out / "checkpoints").iterdir()  # the final checkpoint covers every row
    assert ckpt.name == f"ckpt-{len(rows):08d}.pt"
    assert main(["train", "--out", str(out), "--resume", "--frames", str(128 * (len(rows) + 1)), "--quiet"]) == 0
    assert len(_rows(out / "metrics.csv")) == len(rows) + 1


def test_tensorboard_extra_missing_is_one_line(tmp_path, capsys):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(SystemExit) as e:
            main(["train", "--out", str(tmp_path / "o"), "--tensorboard", *SMALL, "--frames", "128"])
        assert e.value.code == 2 and "metarim[tensorboard]" in capsys.readouterr().err
        assert not (tmp_path / "o").exists()
    else:  # pragma: no cover - depends on the optional extra
        _train(tmp_path / "o", "--tensorboard", "--frames", "128")
        assert list((tmp_path / "o").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_matches_clean_run(tmp_path):
    import signal
    import time

    frames = ["--frames", "1536", "--checkpoint-every", "2"]  # 12 updates of 128 frames
    _train(tmp_path / "clean", *frames)
    out = tmp_path / "killed"
    base = [sys.executable, "-m", "metarim.cli", "train", "--out", str(out), *SMALL, *frames]
    for rows_before_kill, extra_sleep in [(2, 0.0), (5, 0.05), (8, 0.13)]:
        cmd = base + (["--resume"] if (out / "config.json").is_file() else [])
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while True:
            n = len((out / "metrics.csv").read_text().splitlines()) - 1 if (out / "metrics.csv").is_file() else 0
            if n >= rows_before_kill or proc.poll() is not None:
                break
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(extra_sleep)  # land inside a collection or an update
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    assert _rows(out / "metrics.csv") == _rows(tmp_path / "clean" / "metrics.csv")


def _run_cli(*argv):
    return subprocess.run([sys.executable, "-m", "metarim.cli", *argv], capture_output=True, text=True,
                          timeout=300)


def _one_error_line(stderr, *needles):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metarim: error: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_unwritable_out_is_one_line_exit_2(run):
    """/proc: every permission check passes for root, yet nothing can be created there."""
    proc = _run_cli("train", "--out", "/proc/forbidden/run", *SMALL, "--frames", "128")
    assert proc.returncode == 2
    _one_error_line(proc.stderr, "--out /proc/forbidden/run cannot be written", "choose a folder")
    proc = _run_cli("render", "--run", str(run), "--out", "/proc/x.gif")
    assert proc.returncode == 2
    _one_error_line(proc.stderr, "--out /proc/x.gif cannot be written", "choose a folder")


def test_out_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("keep")
    with pytest.raises(SystemExit) as e:
        main(["train", "--out", str(tmp_path / "f" / "run"), *SMALL])
    assert e.value.code == 2
    _one_error_line(capsys.readouterr().err, "cannot be written")
    assert _files(tmp_path) == {tmp_path.joinpath("f").relative_to(tmp_path): b"keep"}


def test_writable_check_leaves_no_trace(tmp_path, capsys, monkeypatch):
    """The check creates the missing folders of --out and a file, and removes them again."""
    import metarim.train

    made = []

    def failing(self, config, out, **kwargs):
        made.extend(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        raise ValueError("stop before the run starts")

    monkeypatch.setattr(metarim.train.Trainer, "__init__", failing)
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "a" / "b"), *SMALL])
    assert "stop before the run starts" in capsys.readouterr().err
    assert made == [] and list(tmp_path.iterdir()) == []


def test_render_keeps_existing_gif_when_it_fails(run, tmp_path, capsys, monkeypatch):
    import importlib

    evaluate = importlib.import_module("metarim.evaluation.evaluate")  # the package exports a function of that name
    gif = tmp_path / "agent.gif"
    gif.write_bytes(b"an earlier GIF")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluate, "render", broken)
    with pytest.raises(SystemExit) as e:
        main(["render", "--run", str(run), "--out", str(gif)])
    assert e.value.code == 2
    _one_error_line(capsys.readouterr().err, "No space left on device")
    assert _files(tmp_path) == {gif.relative_to(tmp_path): b"an earlier GIF"}  # no temp file left


@pytest.mark.parametrize("argv,needle", [
    (["--fps", "0"], "--fps 0 must be >= 1"),
    (["--out", "DIR.gif"], "is a folder"),
    (["--out", "NODIR/x.gif"], "does not exist; create it first"),
], ids=["fps", "folder", "no-folder"])
def test_render_bad_out(run, tmp_path, capsys, argv, needle):
    (tmp_path / "DIR.gif").mkdir()
    argv = [str(tmp_path / a) if a in ("DIR.gif", "NODIR/x.gif") else a for a in argv]
    with pytest.raises(SystemExit) as e:
        main(["render", "--run", str(run), "--out", str(tmp_path / "a.gif"), *argv])
    assert e.value.code == 2
    _one_error_line(capsys.readouterr().err, needle)
    assert [p.name for p in tmp_path.iterdir()] == ["DIR.gif"]


def test_overwrite_replaces_a_run_and_keeps_it_when_setup_fails(run, tmp_path, capsys, monkeypatch):
    import shutil

    import metarim.train

    out = tmp_path / "r"
    shutil.copytree(run, out)
    before = _files(out)

    def failing(self, *args, **kwargs):
        raise ValueError("the new run cannot start")

    with monkeypatch.context() as m:
        m.setattr(metarim.train.Trainer, "__init__", failing)
        with pytest.raises(SystemExit) as e:
            main(["train", "--out", str(out), "--overwrite", *SMALL, "--frames", "128"])
    assert e.value.code == 2
    _one_error_line(capsys.readouterr().err, "the new run cannot start")
    assert _files(out) == before and [p.name for p in tmp_path.iterdir()] == ["r"]
    _train(out, "--overwrite", "--frames", "128")
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["ckpt-00000001.pt"]
    assert len(_rows(out / "metrics.csv")) == 1 and [p.name for p in tmp_path.iterdir()] == ["r"]


@pytest.mark.parametrize("content,needle", [
    ("{not json", "is damaged (not valid JSON"),
    ('{"seeds": {}}', 'is damaged (no "config" object)'),
    ('{"config": {"frame": 3}}', "unknown config key 'frame'"),
], ids=["not-json", "no-config", "bad-key"])
def test_damaged_config_json_is_one_line_naming_the_file(run, tmp_path, content, needle):
    import shutil

    out = tmp_path / "r"
    shutil.copytree(run, out)
    (out / "config.json").write_text(content)
    before = _files(out)
    for argv in (["train", "--out", str(out), "--resume", "--quiet"], ["eval", "--run", str(out)],
                 ["render", "--run", str(out), "--out", str(tmp_path / "a.gif")]):
        proc = _run_cli(*argv)
        assert proc.returncode == 2, argv
        _one_error_line(proc.stderr, str(out / "config.json"), needle)
        assert _files(out) == before and not (tmp_path / "a.gif").exists()


def test_corrupt_newest_checkpoint_falls_back_to_the_one_before(run, tmp_path, capsys):
    """The module's run has checkpoints 6 and 8; with 8 damaged, eval and render use 6 and a
    resume continues from 6, cuts metrics.csv back to its 6 rows and trains rows 7-8 again,
    exactly as the uninterrupted run did; the damaged file is kept aside."""
    import shutil

    out = tmp_path / "r"
    shutil.copytree(run, out)
    ckpt8 = out / "checkpoints" / "ckpt-00000008.pt"
    damaged = ckpt8.read_bytes()[:5000]
    ckpt8.write_bytes(damaged)
    assert main(["eval", "--run", str(out), "--episodes", "2", "--num-envs", "2"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["frames"] == 768  # checkpoint 6
    corrupt = f"metarim: checkpoint {re.escape(str(ckpt8))} is corrupt or not a metarim checkpoint \\(\\w+\\); "
    assert re.fullmatch(corrupt + r"using ckpt-00000006\.pt\n", captured.err), captured.err
    assert main(["render", "--run", str(out), "--out", str(tmp_path / "a.gif")]) == 0
    assert "using ckpt-00000006.pt" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert re.fullmatch(corrupt + r"resuming from ckpt-00000006\.pt \(kept as ckpt-00000008\.pt\.corrupt\)\n", err), err
    assert (out / "checkpoints" / "ckpt-00000008.pt.corrupt").read_bytes() == damaged
    assert _rows(out / "metrics.csv") == _rows(run / "metrics.csv")
    import torch

    new = torch.load(ckpt8, weights_only=True)["policy"]
    ref = torch.load(run / "checkpoints" / "ckpt-00000008.pt", weights_only=True)["policy"]
    assert new.keys() == ref.keys() and all(torch.equal(new[k], ref[k]) for k in ref)


def test_no_checkpoint_loads_changes_nothing(run, tmp_path):
    import shutil

    out = tmp_path / "r"
    shutil.copytree(run, out)
    for ckpt in (out / "checkpoints").iterdir():
        ckpt.write_bytes(ckpt.read_bytes()[:5000])
    before = _files(out)
    proc = _run_cli("train", "--out", str(out), "--resume", "--quiet")
    assert proc.returncode == 2
    _one_error_line(proc.stderr, "ckpt-00000008.pt is corrupt", "nor does the one before it", "nothing was changed",
                    "--overwrite")
    proc = _run_cli("eval", "--run", str(out))
    assert proc.returncode == 2
    _one_error_line(proc.stderr, "ckpt-00000008.pt is corrupt")
    assert _files(out) == before


def test_train_help_is_plain_text(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "``" not in text and ":class:" not in text and ":func:" not in text and "~metarim" not in text
    assert "Memory core name (metarim.rl.MEMORY_CORES): lstm or rim." in text
    assert "on the other half (WorkerVecEnv): uses a second core" in text


@pytest.mark.parametrize("doc,plain", [
    ("``lstm`` or ``rim``", "lstm or rim"),
    (":class:`~metarim.envs.worker.WorkerVecEnv`", "WorkerVecEnv"),
    (":func:`metarim.rl.rollout.play`", "metarim.rl.rollout.play"),
    (":py:meth:`~a.B.c`", "c"),
    (":doc:`the concepts <concepts>`", "the concepts"),
    ("`default role`", "default role"),
    ("``T * B``\n    rows,   50 %", "T * B rows, 50 %%"),
])
def test_plain_help_text(doc, plain):
    from metarim.cli import _plain

    assert _plain(doc) == plain


@pytest.mark.parametrize("algo,extra", [
    ("maml", ["--meta-batch", "2", "--num-tasks", "3"]),
    ("reptile", ["--meta-batch", "2", "--num-tasks", "3", "--inner-steps", "2"]),
    ("maml", ["--meta-batch", "2", "--num-tasks", "3", "--env-backend", "tensor", "--env", "BabyAI-GoToLocalS6N2-v0"]),
])
def test_task_learners_resume_exactly(tmp_path, algo, extra):
    """MAML and Reptile checkpoint every task's envs and collector: a run stopped and
    resumed equals the uninterrupted one, row for row and weight for weight (until the
    checkpoints held them, their envs restarted on load and the episodes differed)."""
    from metarim.checkpoint import latest_checkpoint, load_checkpoint

    flags = ["--algo", algo, "--num-steps", "16", "--checkpoint-every", "1", *extra]
    _train(tmp_path / "full", "--frames", "1024", *flags)
    per_update = float(_rows(tmp_path / "full" / "metrics.csv")[0]["frames"])
    assert len(_rows(tmp_path / "full" / "metrics.csv")) >= 4
    _train(tmp_path / "part", "--frames", str(int(2 * per_update)), *flags)
    assert main(["train", "--out", str(tmp_path / "part"), "--resume", "--frames", "1024", "--quiet"]) == 0
    assert _rows(tmp_path / "part" / "metrics.csv") == _rows(tmp_path / "full" / "metrics.csv")
    a, b = (load_checkpoint(latest_checkpoint(tmp_path / r))["policy"] for r in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)
