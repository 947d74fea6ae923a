"""``examples/adaptation_meta.py``: its sweep file, its tables on hand-made curves and
trial records, and ``--quick`` end to end per setting (outputs checked for content)."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest
from load_script import load_script

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "adaptation_meta.py"
SIX = ["metarim", "fastslow", "rim", "lstm", "maml", "reptile"]


@pytest.fixture(scope="module")
def mod():
    return load_script(EXAMPLE)


def _strict(path: pathlib.Path) -> dict:
    """``summary.json`` read by a parser that refuses NaN and Infinity."""
    with open(path) as f:
        return json.load(f, parse_constant=lambda c: 1 / 0)


def _png(path: pathlib.Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) > 10_000, f"{path} is suspiciously small"


def _table(md: str, title: str) -> dict[str, list[str]]:
    """The rows ``{learner: cells}`` of the markdown table under ``## title``."""
    lines = md.split(f"## {title}\n", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    rows = lines[2:]
    return {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")][1:] for r in rows}


def _rows(folder: pathlib.Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv") as f:
        return list(csv.DictReader(f))


# --- the sweep file and the runs of each setting ------------------------------------------

def test_sweep_file_holds_the_learners(mod):
    from metarim.sweep.spec import expand_sweep, load_sweep

    spec = load_sweep(mod.SWEEP)
    assert list(spec["learners"]) == SIX and set(SIX) <= set(spec["notes"])
    assert spec["learners"]["metarim"] == {"algo": "metarim", "memory": "rim", "num_steps": 64, "chunk_length": 32,
                                           "inner_lr": 10.0, "meta_window": 4, "batch_size": 512}
    assert spec["seeds"] == [1, 2, 3, 4, 5]
    runs = expand_sweep(spec)
    assert {r.config["env_backend"] for r in runs} == {"tensor"}
    assert [r.name for r in runs[:6]] == [f"{n}-s1" for n in SIX]


def test_each_setting_trains_its_runs(mod):
    from metarim.sweep.spec import expand_sweep

    args = mod.parse_args(["--phase-frames", "2000"])
    assert args.learners == SIX and args.seeds == [1, 2, 3, 4, 5]
    main, scratch = (expand_sweep(s) for s in mod.sweep_specs(args, "schedule"))
    assert [r.name for r in main] == [f"{n}-s{s}" for s in args.seeds for n in SIX]
    levels = ["BabyAI-GoToLocalS6N2-v0", "BabyAI-PickupLoc-v0", "BabyAI-PutNextLocal-v0", "BabyAI-GoToLocalS6N2-v0"]
    for r in main:
        assert r.config["frames"] == 8000 and r.config["env"] == levels[0]
        assert r.config["schedule"]["phases"] == [{"frames": 2000, "level": lv} for lv in levels]
    # one scratch run per learner, seed and level after the first (the first phase is one)
    assert sorted(r.name for r in scratch) == sorted(f"scratch-{n}-{lv}-s{s}" for s in args.seeds for n in SIX
                                                     for lv in ("PickupLoc", "PutNextLocal"))
    assert all(r.config["frames"] == 2000 and r.config["schedule"] is None for r in scratch)
    same = {k: v for k, v in main[0].config.items() if k not in ("frames", "schedule", "env")}
    assert {k: v for k, v in scratch[0].config.items() if k not in ("frames", "schedule", "env")} == same
    (periodic,) = (expand_sweep(s) for s in mod.sweep_specs(args, "periodic"))
    assert periodic[0].config["schedule"]["phases"][0]["every"] == 4 and periodic[0].config["frames"] == 400_000
    (trials,) = (expand_sweep(s) for s in mod.sweep_specs(mod.parse_args(["--frames", "9000"]), "trials"))
    c = trials[0].config
    assert (c["env"], c["hidden_task"], c["trial_episodes"], c["task_sampler"], c["frames"]) == (
        "BabyAI-GoToLocal-v0", True, 4, "missions", 9000)
    assert mod.command(mod.parse_args(["--setting", "all", "--seeds", "1"]), "trials") == (
        "python examples/adaptation_meta.py --setting trials --seeds 1")


def test_bad_flags_exit_2_with_one_line(mod, capsys):
    with pytest.raises(SystemExit) as e:
        mod.parse_args(["--phase-frames", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--phase-frames 0 must be >= 1" in err


# --- the tables on hand-made data ---------------------------------------------------------

def _schedule_run(mod, args, learner: str, seed: int, success: list[float]) -> dict:
    """A measurement as :func:`measure_schedule` makes it, from a hand-made curve: one
    row per 50 frames over four phases of 100."""
    from metarim.evaluation.continual import continual_metrics
    from metarim.tasks import Schedule

    frames = np.arange(50.0, 401.0, 50.0)
    ref = (np.array([50.0, 100.0]), np.array([0.5, 0.5]))  # AUC^b = 0.5 for every level
    rep = continual_metrics(frames, np.array(success), Schedule.from_dict(mod.four_phase(args)), window=50,
                            scratch={0: ref, 1: ref, 2: ref, 3: ref})
    return {"learner": learner, "seed": seed, "report": rep, "curve": [frames.tolist(), success],
            "train_seconds": 30.0, "scratch_seconds": 30.0}


def test_schedule_tables_equal_hand_computation(mod, tmp_path):
    args = mod.parse_args(["--phase-frames", "100", "--window", "50", "--learners", "metarim", "lstm",
                           "--out", str(tmp_path)])
    runs = [_schedule_run(mod, args, "metarim", 1, [0.2, 1.0, 0.0, 0.6, 0.0, 0.0, 0.9, 1.0]),
            _schedule_run(mod, args, "metarim", 2, [0.4, 0.8, 0.2, 0.8, 0.0, 0.2, 0.7, 0.8]),
            _schedule_run(mod, args, "lstm", 1, [0.0, 0.5, float("nan"), 0.1, 0.0, 0.0, 0.3, 0.9])]
    data = mod.aggregate("schedule", runs, args, tmp_path, wall_s=1.0)
    s = data["summary"]
    # switch 1 (-> phase 1): before = s at the end of phase 0, after = mean over its first 50 frames
    assert s["metarim"]["before@1"]["values"] == [1.0, 0.8] and s["metarim"]["after@1"]["values"] == [0.0, 0.2]
    # frames to 0.8 in phase 1 (rows at 150, 200): metarim s1 never (0.6), s2 at 200 - 100
    assert s["metarim"]["frames_to_thr@1"]["values"] == [None, 100.0]
    assert s["metarim"]["frames_to_thr@1"]["reached"] == 1
    # frames back to the level before (1.0; 0.8): never; 100
    assert s["metarim"]["frames_to_before@1"]["values"] == [None, 100.0]
    # AUC of phase 3 (rows 350, 400) and forward transfer against AUC^b = 0.5
    assert s["metarim"]["auc@3"]["values"] == pytest.approx([0.95, 0.75])
    assert s["metarim"]["ft@3"]["values"] == pytest.approx([(0.95 - 0.5) / 0.5, (0.75 - 0.5) / 0.5])
    assert s["lstm"]["auc@1"]["values"] == pytest.approx([0.05])  # NaN counts as 0: (0 + 0.1) / 2
    # forgetting: end of phase 0 minus the first 50 frames of phase 3
    assert s["metarim"]["forgetting@3"]["values"] == pytest.approx([1.0 - 0.9, 0.8 - 0.7])
    assert s["metarim"]["auc@0"]["mean"] == pytest.approx((0.6 + 0.6) / 2)
    assert "welch_p" in s["lstm"]["auc@0"] and "welch_p" not in s["metarim"]["auc@0"]
    assert data["train_seconds_summed"] == 180.0
    md = (tmp_path / "summary.md").read_text()
    rows = _table(md, "Switch 1: GoToLocalS6N2 → PickupLoc")
    assert list(rows) == ["metarim", "lstm"]
    assert rows["metarim"][2] == "100 [100, 100] (1/2 seeds)" and rows["lstm"][2] == "not reached"
    assert "Command: `python examples/adaptation_meta.py --setting schedule --phase-frames 100" in md
    assert "3.0 min" in md  # 180 s of training
    _strict(tmp_path / "summary.json")
    _png(tmp_path / "curves.png")


def test_trials_tables_equal_hand_computation(mod, tmp_path):
    from metarim.evaluation.trials import trial_curve

    args = mod.parse_args(["--learners", "metarim", "lstm", "--trials", "3"])

    def report(succ: list[list[float]], adapted: bool) -> dict:
        recs = [{"env": 0, "trial": t, "index": i, "success": v, "return": v / 2, "task": "red ball"}
                for t, trial in enumerate(succ) for i, v in enumerate(trial)]
        curves = {"0": trial_curve(recs, 3)}
        if adapted:
            curves["1"] = trial_curve([{**r, "success": 1.0, "return": 0.5} for r in recs], 3)
        return {"held_out_tasks": ["red ball"], "curves": curves}

    runs = [{"learner": "metarim", "seed": 1, "report": report([[0, 1, 1], [1, 1, 0]], True), "train_seconds": 6.0},
            {"learner": "metarim", "seed": 2, "report": report([[0, 0, 1], [0, 1, 1]], True), "train_seconds": 6.0},
            {"learner": "lstm", "seed": 1, "report": report([[1, 1, 1], [0, 0, 0]], False), "train_seconds": 6.0}]
    data = mod.aggregate("trials", runs, args, tmp_path, wall_s=1.0)
    s = data["summary"]
    assert s["metarim"]["a0 ep1"]["values"] == [0.5, 0.0] and s["metarim"]["a0 ep3"]["values"] == [0.5, 1.0]
    # gain = mean success over episodes 2..3 minus episode 1
    assert s["metarim"]["a0 gain"]["values"] == pytest.approx([0.75 - 0.5, 0.75 - 0.0])
    assert s["metarim"]["a0 return gain"]["values"] == pytest.approx([(0.75 - 0.5) / 2, 0.75 / 2])
    assert s["metarim"]["a1 gain"]["values"] == [0.0, 0.0]
    assert s["lstm"]["a0 gain"]["values"] == [0.0] and "a1 gain" not in s["lstm"]
    md = (tmp_path / "summary.md").read_text()
    rows = _table(md, "Within-trial success per episode of a trial, held-out targets of GoToLocal")
    assert rows["lstm"][4:] == ["–"] * 4  # no adapt-1 curve without an inner loop
    assert rows["metarim"][3].startswith("0.50 [0.25, 0.75]")  # a0 gain: mean of 0.25 and 0.75
    _strict(tmp_path / "summary.json")
    _png(tmp_path / "trials.png")


# --- --quick end to end -------------------------------------------------------------------

@pytest.fixture(scope="module")
def periodic(mod, tmp_path_factory):
    out = tmp_path_factory.mktemp("adaptation")
    assert mod.main(["--quick", "--setting", "periodic", "--out", str(out)]) == 0
    return out / "periodic"


def test_quick_periodic(periodic):
    data = _strict(periodic / "summary.json")
    assert list(data["summary"]) == ["metarim", "lstm"]
    for r in data["runs"]:
        rows = _rows(periodic / "runs" / f"{r['learner']}-s1")
        f = np.array([float(x["frames"]) for x in rows])
        s = np.nan_to_num(np.array([float(x["success_rate"]) for x in rows]))
        # the AUC is the frame-weighted mean of the whole training curve
        assert r["auc"] == pytest.approx(float((s * np.diff(f, prepend=0.0)).sum() / f[-1]))
        assert f[-1] == 2048 and r["train_seconds"] > 0
    rows = _table((periodic / "summary.md").read_text(), "Periodic mode (each column switches level every 4 episodes)")
    assert list(rows) == ["metarim", "lstm"] and all(len(c) == 3 for c in rows.values())
    _png(periodic / "curves.png")


@pytest.fixture(scope="module")
def trials(mod, tmp_path_factory):
    out = tmp_path_factory.mktemp("adaptation")
    assert mod.main(["--quick", "--setting", "trials", "--out", str(out)]) == 0
    return out / "trials"


def test_quick_trials(mod, trials, capsys):
    data = _strict(trials / "summary.json")
    assert data["summary"]["metarim"].keys() >= {"a0 ep1", "a0 ep4", "a0 gain", "a1 ep1", "a1 gain"}
    assert "a1 ep1" not in data["summary"]["lstm"]
    for r in data["runs"]:
        c0 = r["report"]["curves"]["0"]
        assert c0["trials"] == 8 and len(c0["success"]) == 4
        assert c0["gain"] == pytest.approx(np.mean(c0["success"][1:]) - c0["success"][0])
        assert len(r["report"]["held_out_tasks"]) >= 1
    _png(trials / "trials.png")
    # a rerun reuses the measurements and trains nothing
    before = (trials / "runs" / "lstm-s1.json").stat().st_mtime_ns
    assert mod.main(["--quick", "--setting", "trials", "--out", str(trials.parent)]) == 0
    assert capsys.readouterr().err.count("done earlier") == 2
    assert (trials / "runs" / "lstm-s1.json").stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def schedule(mod, tmp_path_factory):
    out = tmp_path_factory.mktemp("adaptation")
    assert mod.main(["--quick", "--setting", "schedule", "--out", str(out)]) == 0
    return out / "schedule"


def test_quick_schedule(schedule):
    data = _strict(schedule / "summary.json")
    assert list(data["summary"]) == ["metarim", "lstm"]
    for run in data["runs"]:
        rep = run["report"]
        assert [s["to"] for s in rep["switches"]] == [1, 2, 3] and len(rep["phases"]) == 4
        assert rep["forgetting"] == [{**rep["forgetting"][0], "phase": 0, "returns_in": 3}]
        # its own reference: the two areas are summed over differently sliced arrays
        assert abs(rep["phases"][0]["forward_transfer"]) < 1e-12
        assert [s["frames"] for s in rep["switches"]] == [1024.0, 2048.0, 3072.0]
        assert run["train_seconds"] > 0 and run["scratch_seconds"] > 0
    assert sorted(p.name for p in (schedule / "runs").iterdir() if p.is_dir()) == sorted(
        f"{pre}{n}{lv}-s1" for n in ("metarim", "lstm")
        for pre, lv in (("", ""), ("scratch-", "-PickupLoc"), ("scratch-", "-PutNextLocal")))
    md = (schedule / "summary.md").read_text()
    for title in ("Switch 1: GoToLocalS6N2 → PickupLoc", "Switch 3: PutNextLocal → GoToLocalS6N2"):
        rows = _table(md, title)
        assert list(rows) == ["metarim", "lstm"] and all(len(c) == 4 for c in rows.values())
    rows = _table(md, "Phases: area under the success curve (AUC), forward transfer (FT), forgetting")
    assert all(len(c) == 9 for c in rows.values())
    _png(schedule / "curves.png")


def test_first_phase_is_the_first_level_alone(mod, schedule, tmp_path):
    """The fact behind ``scratch_levels``: a run trained on the first level alone is the
    schedule run's first phase, every logged number the same (PPO+LSTM here)."""
    from metarim.config import TrainConfig
    from metarim.train import Trainer

    over = {**mod.SPEC["base"], **mod.learner_overrides(mod.parse_args(["--quick", "--learners", "lstm"]))["lstm"]}
    Trainer(TrainConfig.from_dict({**over, "env": "BabyAI-GoToLocalS6N2-v0", "seed": 1, "frames": 1024}), tmp_path,
            progress=False).run()
    timing = ("fps", "collect_s", "update_s", "schedule_phase")
    scheduled = [{k: v for k, v in r.items() if k not in timing} for r in _rows(schedule / "runs" / "lstm-s1")]
    plain = [{k: v for k, v in r.items() if k not in timing} for r in _rows(tmp_path)]
    assert len(plain) == 4 and scheduled[:4] == plain
