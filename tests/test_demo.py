"""``examples/demo.py`` (``make demo``): its configuration is what README.md says, and a
tiny run of it writes every output, in strict JSON."""

from __future__ import annotations

import json
import pathlib
import re

import pytest
from load_script import load_script

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.py"
KIT = {"lr": 0.001, "entropy_coef": 0.01, "init": "kit", "combine": "heads", "mission_dim": 128,
       "image_encoding": "raw"}


@pytest.fixture(scope="module")
def demo():
    return load_script(DEMO)


def _readme_demo() -> str:
    text = (ROOT / "README.md").read_text()
    return " ".join(text.split("## The demo", 1)[1].split("\n## ", 1)[0].split())


def test_demo_trains_what_the_readme_says(demo):
    """Learners, level, backend, budget, seeds, parallel runs and evaluation episodes of
    the demo's sweep against the numbers written in README.md's demo paragraph."""
    from metarim.config import TrainConfig
    from metarim.sweep.spec import expand_sweep

    para = _readme_demo()
    frames = int(re.search(r"for ([\d,]+) frames each", para).group(1).replace(",", ""))
    episodes = int(re.search(r"with (\d+) evaluation episodes", para).group(1))
    jobs = int(re.search(r"(\d+) runs at a time", para).group(1))
    learners = re.findall(r"\(`(\w+)`\)", para)
    assert learners == ["lstm", "rim", "metarim"] and "tensor env backend" in para and "seed 0," in para
    assert "`make demo` (`python examples/demo.py`)" in para

    args = demo.parse_args([])
    assert (args.frames, args.episodes, args.jobs, args.seeds) == (frames, episodes, jobs, [0])
    assert args.env_backend == "tensor" and args.out == "results/demo"
    runs = expand_sweep(demo.demo_spec(args))
    assert sorted(r.learner for r in runs) == sorted(learners)
    assert runs[0].learner == "metarim"  # the slowest run starts first
    for r in runs:
        c = TrainConfig.from_dict(r.config)  # a valid run
        assert (c.env, c.env_backend, c.frames, c.seed) == ("BabyAI-GoToLocalS6N2-v0", "tensor", frames, 0)
        assert {k: getattr(c, k) for k in KIT} == KIT, r.learner
        assert c.frames % (c.num_envs * c.num_steps) == 0  # the budget is whole updates
    cfg = {r.learner: r.config for r in runs}
    assert {k: cfg["metarim"][k] for k in ("algo", "memory", "num_steps", "chunk_length", "inner_lr",
                                           "outer_chunks", "meta_window")} == {
        "algo": "metarim", "memory": "rim", "num_steps": 64, "chunk_length": 32, "inner_lr": 10.0,
        "outer_chunks": "all", "meta_window": 4}
    assert (cfg["rim"]["algo"], cfg["rim"]["memory"]) == ("ppo", "rim")
    assert (cfg["lstm"]["algo"], cfg["lstm"]["memory"]) == ("ppo", "lstm")
    assert TrainConfig().meta_window == 4  # the default since issue 19, which the demo also passes


def test_switch_segment_trains_what_the_readme_says(demo):
    """The task-switch segment: its learners, levels, frames per phase and window against
    README.md's demo paragraph, each run a valid config with the demo's settings and the
    two-phase schedule, switching exactly at the phase length (a whole number of updates)."""
    from metarim.config import TrainConfig
    from metarim.sweep.spec import expand_sweep
    from metarim.tasks.schedule import Schedule

    para = _readme_demo()
    m = re.search(r"then trains PPO\+LSTM and Meta-RIM from scratch for ([\d,]+) frames on "
                  r"`(BabyAI-\w+-v0)` and ([\d,]+) more on `(BabyAI-\w+-v0)`", para)
    assert m, "README's demo paragraph no longer describes the task-switch segment"
    per_phase = int(m.group(1).replace(",", ""))
    assert int(m.group(3).replace(",", "")) == per_phase
    assert demo.SWITCH_LEVELS == (m.group(2), m.group(4)) == ("BabyAI-GoToLocalS6N2-v0", "BabyAI-GoToLocalS8N7-v0")
    assert f"first {demo.SWITCH_WINDOW // 1000}k frames after" in para and "`switch.png`" in para

    args = demo.parse_args([])
    assert args.switch_frames == demo.SWITCH_FRAMES == per_phase
    runs = expand_sweep(demo.switch_spec(args))
    assert [r.name for r in runs] == ["switch-metarim-s0", "switch-lstm-s0"]  # the slower first
    main = {r.learner: r.config for r in expand_sweep(demo.demo_spec(args))}
    for r in runs:
        c = TrainConfig.from_dict(r.config)
        learner = r.learner.removeprefix("switch-")
        assert (c.env, c.env_backend, c.frames, c.seed) == (demo.SWITCH_LEVELS[0], "tensor", 2 * per_phase, 0)
        # the same learner as the comparison's, but for the budget and the schedule
        assert {k: v for k, v in r.config.items() if k not in ("frames", "schedule")} == \
            {k: v for k, v in main[learner].items() if k not in ("frames", "schedule")}
        sched = Schedule.from_dict(c.schedule)
        assert [p.name for p in sched.phases] == list(demo.SWITCH_LEVELS)
        assert sched.starts() == [0, per_phase] and per_phase % (c.num_envs * c.num_steps) == 0


def test_switch_segment_can_be_left_out_or_run_alone(demo, capsys):
    from metarim.sweep.spec import expand_sweep

    assert demo.parse_args(["--switch-frames", "0"]).switch_frames == 0
    assert len(expand_sweep(demo.switch_spec(demo.parse_args(["--switch-frames", "1024"])))) == 2
    for bad in (["--switch-frames", "-1"], ["--only-switch", "--switch-frames", "0"]):
        with pytest.raises(SystemExit) as e:
            demo.parse_args(bad)
        assert e.value.code == 2
        assert "--switch-frames" in capsys.readouterr().err


def test_make_demo_runs_the_demo():
    make = (ROOT / "Makefile").read_text()
    recipe = make.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "examples/demo.py --out results/demo" in recipe and "--quick" not in recipe


@pytest.mark.parametrize("flag", ["--frames", "--episodes", "--jobs"])
def test_demo_refuses_a_bad_count(demo, flag, capsys):
    with pytest.raises(SystemExit) as e:
        demo.parse_args([flag, "0"])
    assert e.value.code == 2
    assert f"{flag} 0 must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_demo_writes_every_output_in_strict_json(demo, tmp_path, capsys):
    """One update per learner: every output exists, every JSON file parses with NaN and
    Infinity refused, and the end of the output names the files and the full command."""
    assert demo.main(["--frames", "1024", "--episodes", "2", "--switch-frames", "1024", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    files = sorted(tmp_path.rglob("*.json"))
    names = {p.relative_to(tmp_path).as_posix() for p in files}
    assert {"summary.json", "sweep.json", "sweep-status.json", "runs/metarim-s0.json",
            "runs/metarim-s0/config.json", "switch.json", "runs/switch-lstm-s0/config.json"} <= names
    assert "runs/switch-lstm-s0.json" not in names  # the segment is not measured
    for p in files:
        with open(p) as f:
            json.load(f, parse_constant=lambda c: 1 / 0)
    runs = json.loads((tmp_path / "runs" / "metarim-s0.json").read_text())
    assert runs["adaptation"]["0"]["adapt_loss"] is None  # NaN (no update at k=0) written as null
    for name in ("curves.png", "modules.png", "switch.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(tmp_path / "metarim.gif") as gif:
        assert gif.n_frames > demo.GIF_EPISODES  # a caption frame per episode at least
    for name in ("curves.png", "modules.png", "metarim.gif", "switch.png"):
        assert str(tmp_path / name) in out
    # one update per phase: the switch table's row per learner, from metrics.csv's phases
    switch = json.loads((tmp_path / "switch.json").read_text())
    assert [r["learner"] for r in switch] == demo.SWITCH_LEARNERS
    for r in switch:
        (sw,) = r["switches"]
        assert (sw["frames"], sw["name"]) == (1024, demo.SWITCH_LEVELS[1])
        rows = (tmp_path / "runs" / f"switch-{r['learner']}-s0" / "metrics.csv").read_text().splitlines()
        head = rows[0].split(",")
        assert [float(x.split(",")[head.index("schedule_phase")]) for x in rows[1:]] == [0.0, 1.0]
        assert re.search(rf"^\| {r['learner']} \| ", out, re.M)
    assert out.rstrip().splitlines()[-1].endswith(demo.FULL)
    # not a terminal here: progress as lines, each run's last one at its full budget
    for run in ("metarim-s0", "rim-s0", "lstm-s0"):
        assert re.search(rf"^{run} +1,024/1,024 frames", err, re.M), run
    for run in ("switch-metarim-s0", "switch-lstm-s0"):
        assert re.search(rf"^{run} +2,048/2,048 frames", err, re.M), run
