"""Continual-learning metrics (metarim.evaluation.continual) against hand computations on
small synthetic success curves, and a brute-force integral of the step curve."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metarim.evaluation.continual import (
    area_under,
    continual_metrics,
    continual_report,
    forward_transfer,
    frames_to_reach,
    phase_rows,
    window_sizes,
)
from metarim.tasks import Schedule

# phases A (400 frames), B (400), A again; twelve updates of 100 frames
SCHEDULE = Schedule.from_dict({"phases": [{"frames": 400, "level": "A-v0"}, {"frames": 400, "level": "B-v0"},
                                          {"level": "A-v0"}]})
F = np.arange(100.0, 1300.0, 100.0)
S = np.array([0.2, 0.5, 0.8, 0.9, np.nan, 0.1, 0.6, 0.85, 0.5, 0.7, 0.9, 1.0])
SCRATCH_B = (np.array([100.0, 200.0, 300.0, 400.0, 500.0]), np.array([0.0, 0.2, 0.4, 0.6, 0.8]))
SCRATCH_A = (np.array([200.0, 400.0]), np.array([0.5, 1.0]))


def _brute_area(frames, success, a, b):
    """The step curve s(f) = s_i on (f_{i-1}, f_i] summed frame by frame over (a, b]."""
    total = 0.0
    for x in range(int(a) + 1, int(b) + 1):
        i = int(np.searchsorted(frames, x))  # first row with f_i >= x
        v = success[i]
        total += 0.0 if np.isnan(v) else v
    return total / (b - a)


def test_area_under_equals_the_frame_by_frame_sum():
    rng = np.random.default_rng(0)
    frames = np.cumsum(rng.integers(1, 40, 30)).astype(float)
    success = rng.random(30)
    success[[0, 7]] = np.nan
    for a, b in [(0, frames[-1]), (5, 17), (frames[3], frames[9]), (12, frames[-1] - 3)]:
        assert area_under(frames, success, a, b) == pytest.approx(_brute_area(frames, success, a, b), abs=1e-12)
    with pytest.raises(ValueError, match="end=3 must be > start=3"):
        area_under(frames, success, 3, 3)


def test_frames_to_reach_and_forward_transfer_by_hand():
    assert frames_to_reach(F, S, 400, 800, 0.8) == 400.0  # row 8 (800 frames) is the first >= 0.8
    assert frames_to_reach(F, S, 400, 800, 0.9) is None
    assert frames_to_reach(F, S, 400, 800, 0.0) == 100.0  # NaN counts as 0 >= 0
    assert forward_transfer(0.3875, 0.3) == pytest.approx(0.125)
    assert forward_transfer(0.5, 1.0) is None


def test_phase_rows_follow_the_starting_frames():
    assert phase_rows(F, SCHEDULE).tolist() == [0] * 4 + [1] * 4 + [2] * 4
    late = Schedule.from_dict({"phases": [{"frames": 350, "level": "A-v0"}, {"level": "B-v0"}]})
    # the update starting at 300 is still phase 0; phase 1 starts with the update at 400
    assert phase_rows(F, late).tolist() == [0] * 4 + [1] * 8


def test_every_metric_equals_the_hand_computation():
    m = continual_metrics(F, S, SCHEDULE, scratch={1: SCRATCH_B, "A-v0": SCRATCH_A}, window=250)
    phases = {p["phase"]: p for p in m["phases"]}
    # AUC_k: sum of s_i * 100 over the phase's rows / 400
    assert phases[0]["auc"] == pytest.approx((0.2 + 0.5 + 0.8 + 0.9) / 4)  # 0.6
    assert phases[1]["auc"] == pytest.approx((0.0 + 0.1 + 0.6 + 0.85) / 4)  # 0.3875
    assert phases[2]["auc"] == pytest.approx((0.5 + 0.7 + 0.9 + 1.0) / 4)  # 0.775
    assert [(p["start"], p["end"]) for p in m["phases"]] == [(0, 400), (400, 800), (800, 1200)]
    # reference AUCs over the phase's 400 frames: B (0 + .2 + .4 + .6) / 4 = .3; A (.5*200 + 1*200) / 400 = .75
    assert phases[1]["auc_scratch"] == pytest.approx(0.3)
    assert phases[0]["auc_scratch"] == phases[2]["auc_scratch"] == pytest.approx(0.75)
    assert phases[1]["forward_transfer"] == pytest.approx((0.3875 - 0.3) / 0.7)  # 0.125
    assert phases[0]["forward_transfer"] == pytest.approx((0.6 - 0.75) / 0.25)  # -0.6
    assert phases[2]["forward_transfer"] == pytest.approx((0.775 - 0.75) / 0.25)  # 0.1
    s1, s2 = m["switches"]
    assert (s1["to"], s1["frames"], s1["success_before"]) == (1, 400, 0.9)
    # first 250 frames after 400: 100 * 0 (NaN) + 100 * 0.1 + 50 * 0.6 = 40
    assert s1["success_after"] == pytest.approx(40 / 250)
    assert (s1["frames_to_threshold"], s1["frames_to_before"]) == (400.0, None)
    assert (s2["to"], s2["frames"], s2["success_before"]) == (2, 800, 0.85)
    # 100 * 0.5 + 100 * 0.7 + 50 * 0.9 = 165
    assert s2["success_after"] == pytest.approx(165 / 250)
    assert (s2["frames_to_threshold"], s2["frames_to_before"]) == (300.0, 300.0)
    (fg,) = m["forgetting"]  # phase 2 brings phase 0's task back: 0.9 at the end of phase 0
    assert (fg["phase"], fg["returns_in"], fg["success_end"]) == (0, 2, 0.9)
    assert fg["success_return"] == pytest.approx(0.66) and fg["forgetting"] == pytest.approx(0.9 - 0.66)


def test_window_longer_than_the_phase_and_missing_references():
    m = continual_metrics(F, S, SCHEDULE, window=10_000)
    assert m["switches"][0]["success_after"] == pytest.approx(m["phases"][1]["auc"])  # W' = L_k = 400
    assert all(p["forward_transfer"] is None and p["auc_scratch"] is None for p in m["phases"])
    with pytest.raises(ValueError, match="scratch run of phase 1 .* has 300 frames, fewer than the phase's 400"):
        continual_metrics(F, S, SCHEDULE, scratch={1: (np.array([300.0]), np.array([0.5]))})
    # a run stopped inside phase 1 has no phase 2, no second switch and nothing forgotten yet
    m = continual_metrics(F[:6], S[:6], SCHEDULE)
    assert [p["phase"] for p in m["phases"]] == [0, 1] and len(m["switches"]) == 1 and m["forgetting"] == []
    assert m["phases"][1]["auc"] == pytest.approx(0.1 * 100 / 200)


def test_recovery_waits_for_a_window_of_min_episodes():
    # episodes finished per update; the window restarts at each switch (rows 4 and 8)
    episodes = np.array([10, 10, 10, 10, 0, 5, 10, 10, 30, 5, 5, 5])
    assert window_sizes(episodes, phase_rows(F, SCHEDULE)).tolist() == [10, 20, 30, 40, 0, 5, 15, 25, 30, 35, 40, 45]
    assert window_sizes(episodes, phase_rows(F, SCHEDULE), capacity=12).tolist()[:4] == [10, 12, 12, 12]
    m = continual_metrics(F, S, SCHEDULE, episodes=episodes, min_episodes=20)
    s1, s2 = m["switches"]
    # phase 1: 0.85 at 800 has 25 episodes -> 400 frames, as without the rule
    assert (s1["frames_to_threshold"], s1["frames_to_before"]) == (400.0, None)
    # phase 2: 0.5 at 900 has 30 episodes -> counts; with 35 required it is 0.7 at 1000 (35 episodes)
    assert (s2["frames_to_threshold"], s2["frames_to_before"]) == (300.0, 300.0)
    m = continual_metrics(F, S, SCHEDULE, episodes=episodes, min_episodes=35)
    assert m["min_episodes"] == 35 and m["switches"][1]["frames_to_before"] == 300.0
    assert m["switches"][0]["frames_to_threshold"] is None  # 0.85 at 800 rests on 25 episodes
    # a lucky first update: success 1.0 over the 2 episodes after the switch counts only without the rule
    lucky = S.copy()
    lucky[8] = 1.0
    episodes[8:10] = [2, 25]  # window 2, then 27: row 9 (0.7) counts but is below 0.85, row 10 (0.9) is first
    assert continual_metrics(F, lucky, SCHEDULE)["switches"][1]["frames_to_before"] == 100.0
    assert continual_metrics(F, lucky, SCHEDULE, episodes=episodes)["switches"][1]["frames_to_before"] == 300.0
    assert frames_to_reach(F, S, 400, 800, 0.8, valid=np.arange(12) != 7) is None


def _write_run(folder, frames, success, schedule=None, episodes=None):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"config": {"schedule": schedule}}))
    if episodes is not None:
        lines = ["updates,frames,return_mean,success_rate,episodes"] + [
            f"{i + 1},{f!r},0.0,{s!r},{e}" for i, (f, s, e) in enumerate(zip(frames.tolist(), success.tolist(), episodes))]
        (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
        return
    lines = ["updates,frames,return_mean,success_rate"] + [
        f"{i + 1},{f!r},0.0,{s!r}" for i, (f, s) in enumerate(zip(frames.tolist(), success.tolist()))]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_report_from_run_folders(tmp_path):
    _write_run(tmp_path / "run", F, S, SCHEDULE.to_dict())
    _write_run(tmp_path / "b", *SCRATCH_B)
    rep = continual_report(tmp_path / "run", scratch={"B-v0": tmp_path / "b", 0: SCRATCH_A}, window=250)
    want = continual_metrics(F, S, SCHEDULE, scratch={1: SCRATCH_B, 0: SCRATCH_A}, window=250)
    assert rep == {"run": str(tmp_path / "run"), **want}
    json.dumps(rep, allow_nan=False)  # plain JSON: None, never NaN
    episodes = [10, 10, 10, 10, 0, 5, 10, 10, 2, 20, 5, 5]
    lucky = S.copy()
    lucky[8] = 1.0  # 1.0 over the 2 episodes of the first update after the switch
    _write_run(tmp_path / "counted", F, lucky, SCHEDULE.to_dict(), episodes)
    rep = continual_report(tmp_path / "counted", min_episodes=20)
    assert rep["min_episodes"] == 20 and rep["switches"][1]["frames_to_before"] == 300.0  # not 100
    _write_run(tmp_path / "plain", F, S)
    with pytest.raises(ValueError, match="trained without a schedule"):
        continual_report(tmp_path / "plain")
