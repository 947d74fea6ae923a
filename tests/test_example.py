"""``examples/gotolocal_meta.py --quick`` end to end, outputs checked for content."""

from __future__ import annotations

import json
import math
import pathlib

import pytest
from load_script import load_script

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "gotolocal_meta.py"
LEARNERS = ["metarim", "maml", "reptile", "rim", "lstm"]


def _load(path: pathlib.Path = EXAMPLE):
    return load_script(path)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("gotolocal")
    mod = _load()
    assert mod.main(["--quick", "--out", str(out)]) == 0
    return mod, out


def _png(path: pathlib.Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) > 10_000, f"{path} is suspiciously small"


def test_quick_writes_every_output(quick):
    _, out = quick
    for name in ("curves.png", "returns.png", "modules.png"):
        _png(out / name)
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["summary"]) == LEARNERS
    levels = summary["args"]["zero_shot"]
    assert levels == ["BabyAI-GoToLocalS8N7-v0", "BabyAI-GoToLocal-v0"]
    for learner, metrics in summary["summary"].items():
        keys = {"frames_to_0.8", "final_success", "adapt_0", "adapt_1", "adapt_2", "adapt_5", "final_return",
                "frames_to_return_0.5", "frames_to_return_0.8", "frames_to_return_0.9",
                "frames_held_return_0.5", "frames_held_return_0.8", "frames_held_return_0.9"}
        keys |= {f"zero_shot:{lv}" for lv in levels}
        assert keys <= set(metrics), learner
        for name, entry in metrics.items():
            assert len(entry["values"]) == 1 and len(entry["ci95"]) == 2
            if not name.startswith("frames_to_") and entry["reached"]:
                assert 0.0 <= entry["mean"] <= 1.0, (learner, name)
                assert entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1]
            if learner != "metarim":
                assert "welch_p" in entry and entry["welch_p"] is None  # one seed: no test (NaN -> null)
    runs = {r["learner"]: r for r in summary["runs"]}
    assert set(runs) == set(LEARNERS)
    assert runs["metarim"]["config"]["algo"] == "metarim" and runs["rim"]["config"]["algo"] == "ppo"
    assert runs["lstm"]["config"]["memory"] == "lstm"
    for r in runs.values():
        assert r["config"]["frames"] == 1024
        assert set(r["adaptation"]) == {"0", "1", "2", "5"}


def test_frames_to_return_on_synthetic_curves(quick, tmp_path):
    """Frames to a return of 0.5/0.8/0.9 on hand-made curves, first touched and held to the
    end. Rows are (frames, success, return, episodes); a point counts once 100 episodes
    were seen. Seed 1 touches 0.6 at 2,000 frames (the 0.7 at 1,000 comes before the 100th
    episode) and 0.85 at 3,000, never 0.9, and falls to 0.4 at the end, so it holds no
    level; seed 2 is at 0.95 throughout; seed 3 touches 0.5 at 1,000 frames, falls to 0.3,
    and holds 0.5 from 3,000 and 0.8 from 4,000."""
    mod, _ = quick
    rows = {1: [(1000, 0.5, 0.7, 50), (2000, 0.6, 0.6, 60), (3000, 0.9, 0.85, 10), (4000, 0.9, 0.4, 10)],
            2: [(1000, 1.0, 0.95, 100), (2000, 1.0, 0.95, 100)],
            3: [(1000, 0.7, 0.6, 100), (2000, 0.4, 0.3, 100), (3000, 0.7, 0.55, 100), (4000, 0.9, 0.85, 100)]}
    runs = [{"learner": "lstm", "seed": seed, "curve": curve, "adaptation": {}, "zero_shot": {},
             "total_seconds": 1.0, "activity": None, "config": {}} for seed, curve in rows.items()]
    args = mod.parse_args(["--learners", "lstm", "--zero-shot", "BabyAI-GoToLocal-v0"])
    data = mod.aggregate(runs, args, tmp_path)
    lstm = data["summary"]["lstm"]
    got = {t: lstm[f"frames_to_return_{t}"]["values"] for t in ("0.5", "0.8", "0.9")}
    assert got == {"0.5": [2000, 1000, 1000], "0.8": [3000, 1000, 4000], "0.9": [None, 1000, None]}
    held = {t: lstm[f"frames_held_return_{t}"]["values"] for t in ("0.5", "0.8", "0.9")}
    assert held == {"0.5": [None, 1000, 3000], "0.8": [None, 1000, 4000], "0.9": [None, 1000, None]}
    assert lstm["final_return"]["values"] == [0.4, 0.95, 0.85]  # the last tenth (one row)
    md = (tmp_path / "summary.md").read_text()
    assert "frames to return 0.9" in md and "return held ≥ 0.8 from" in md and "(1/3 seeds)" in md


def test_quick_summary_is_strict_json(quick):
    """No bare ``NaN``/``Infinity`` (not JSON; other parsers refuse them): they are null."""
    _, out = quick
    with open(out / "summary.json") as f:
        data = json.load(f, parse_constant=lambda c: 1 / 0)
    adapt = [r["adaptation"]["0"]["adapt_loss"] for r in data["runs"]]
    assert adapt and all(v is None for v in adapt)  # no update at k=0: the loss was NaN
    assert all(math.isfinite(r["adaptation"]["1"]["adapt_loss"]) for r in data["runs"])


def test_sweep_file_holds_the_learners_and_expands(quick):
    """``examples/sweeps/gotolocal.json`` is a valid sweep file with a note on every
    learner, and the example's defaults train exactly its runs."""
    from metarim.sweep.spec import expand_sweep, load_sweep

    mod, _ = quick
    spec = load_sweep(mod.SWEEP)
    assert spec["learners"] == mod.LEARNERS and set(LEARNERS) <= set(mod.LEARNERS)
    assert set(mod.LEARNERS) <= set(spec["notes"])
    runs = expand_sweep(spec)
    assert [r.name for r in runs] == [f"{n}-s{s}" for s in spec["seeds"] for n in mod.LEARNERS]
    args = mod.parse_args(["--learners", *mod.LEARNERS])
    assert expand_sweep(mod.sweep_spec(args)) == runs
    assert [r.name for r in expand_sweep(mod.sweep_spec(mod.parse_args([])))] == [
        f"{n}-s{s}" for s in spec["seeds"] for n in LEARNERS]


def test_quick_markdown_table(quick):
    _, out = quick
    md = (out / "summary.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| learner | frames to 0.8 | final success | frames to return 0.5 | frames to return 0.8 "
                               "| frames to return 0.9 | return held ≥ 0.5 from | return held ≥ 0.8 from "
                               "| return held ≥ 0.9 from | final return | adapt k=0")
    assert "zero-shot GoToLocalS8N7-v0" in lines[0] and "zero-shot GoToLocal-v0" in lines[0]
    rows = {ln.split("|")[1].strip(): ln for ln in lines[1:]}
    assert list(rows) == LEARNERS
    for ln in rows.values():
        cells = [c.strip() for c in ln.strip("|").split("|")][1:]
        assert len(cells) == 15
        assert cells[0] == "not reached" or cells[0].split()[0].replace(",", "").isdigit()
        assert all(c == "not reached" or ("[" in c and "]" in c) for c in cells[1:])
    assert "bootstrap" in md and "Welch" in md and "1,024 frames" in md


def test_quick_module_activity_is_a_distribution(quick):
    _, out = quick
    run = json.loads((out / "runs" / "metarim-s0.json").read_text())
    act = run["activity"]
    k = json.loads((out / "runs" / "metarim-s0" / "config.json").read_text())["config"]["k"]
    assert act["num_units"] == 4 and k == 3  # the default since issue 18
    for freq in {**act["by_color"], **act["by_object"]}.values():
        assert len(freq) == 4 and all(0 <= f <= 1 for f in freq)
        assert sum(freq) == pytest.approx(k)  # k modules active at every step
    assert json.loads((out / "runs" / "lstm-s0.json").read_text())["activity"] is None


def test_quick_resumes_finished_runs(quick, capsys):
    mod, out = quick
    before = (out / "runs" / "maml-s0.json").stat().st_mtime_ns
    assert mod.main(["--quick", "--out", str(out), "--learners", "maml", "lstm"]) == 0
    err = capsys.readouterr().err
    assert err.count("done earlier") == 2 and "training for" not in err
    assert (out / "runs" / "maml-s0.json").stat().st_mtime_ns == before


def test_failure_modes_counts_add_up(quick, capsys):
    _, out = quick
    mod = _load(EXAMPLE.parent / "failure_modes.py")
    assert mod.main(["--run", str(out / "runs" / "metarim-s0"), "--episodes", "6"]) == 0
    res = json.loads(capsys.readouterr().out)
    succ = res["success"]
    assert res["env"] == "BabyAI-GoToLocalS6N2-v0" and succ["all"]["episodes"] == 6
    wins = round(succ["all"]["rate"] * 6)
    assert sum(res["failed_facing"].values()) == 6 - wins  # each failure is classified once
    for split in ("target visible at start", "same-type distractor"):
        parts = [v for k, v in succ.items() if k.startswith(split)]
        assert sum(p["episodes"] for p in parts) == 6
        assert round(sum(p["rate"] * p["episodes"] for p in parts)) == wins
    assert mod.main(["--run", str(out / "missing")]) == 2
    assert "not a metarim run" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["gotolocal_meta.py", "transfer_meta.py"])
def test_a_refused_sweep_is_a_one_line_error(script, tmp_path, capsys):
    mod = _load(EXAMPLE.parent / script)
    assert mod.main(["--quick", "--frames", "-5", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "frames=-5 must be >= 1" in err
    assert not list((tmp_path / "out").rglob("metrics.csv"))  # nothing trained
