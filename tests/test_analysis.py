"""Analysis builders on a synthetic run folder whose numbers are known by hand."""

import json
import math
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from fgrpo_nb import analysis as A  # noqa: E402
from fgrpo_nb.metrics import summarise  # noqa: E402

SEEDS = (0, 1, 2)
N_QUERIES = 20
T975_2 = 4.302652729911275  # Student t, 2 degrees of freedom, 97.5th percentile


def _row(outcome: str) -> dict:
    """A per-query metrics row for one relevant item: a hit is at rank 1."""
    hit = float(outcome == "hit")
    row = {f"{m}@{k}": hit for k in (1, 3, 5) for m in ("R", "P", "Hit", "N")}
    row.update(MRR=hit, ValidRatio=float(outcome != "invalid"),
               SlateRecall=float(outcome in ("hit", "rank_drop")), outcome=outcome)
    return row


def outcomes(method: str, seed: int) -> list[str]:
    """Per-query outcomes, queries in a fixed order (hits first)."""
    plan = {
        "fgrpo": [("hit", 10 + seed), ("rank_drop", 4), ("slate_miss", 4), ("invalid", 2 - seed)],
        "grpo": [("hit", 6), ("rank_drop", 6), ("slate_miss", 6), ("invalid", 2)],
        "sft": [("hit", 4), ("rank_drop", 4), ("slate_miss", 10), ("invalid", 2)],
        "Random": [("hit", 2), ("slate_miss", 18)],
    }[method]
    return [o for o, count in plan for _ in range(count)]


def _log(method: str, seed: int, steps: int = 30) -> list[dict]:
    rows = []
    for step in range(1, steps + 1):
        rows.append({"step": step, "loss": 0.0,
                     "rewards/coverage_reward/mean": 1 - math.exp(-step / 4) + 0.01 * seed,
                     "rewards/utility_reward/mean": 1 - math.exp(-step / 12) + 0.01 * seed,
                     "phase/conflict_rate": (0.2 if method == "grpo" else 0.15) + 0.01 * seed,
                     "valid_rate": 0.9})
    return rows


def write_synthetic_run(run_dir: Path, dataset: str = "ml-1m", phase_lambda: float = 1.0, n: int = 10,
                        hit_shift: int = 0) -> Path:
    """A run folder in experiment.py's layout: SFT, GRPO, F-GRPO and a baseline for 3 seeds."""
    for seed in SEEDS:
        for method in ("sft", "grpo", "fgrpo", "Random"):
            folder = run_dir / "train" / dataset / f"seed{seed}" / method
            folder.mkdir(parents=True, exist_ok=True)
            outs = outcomes(method, seed)
            if method == "fgrpo" and hit_shift:
                hits = outs.count("hit") + hit_shift  # lost hits become slate misses
                outs = (["hit"] * hits + ["slate_miss"] * max(0, -hit_shift) + [o for o in outs if o != "hit"])
                outs = outs[:N_QUERIES]
            rows = [{**_row(o), "query_id": f"q{i}", "text": "<SLATE> c1 </SLATE> <RANK> c1 </RANK>"}
                    for i, o in enumerate(outs)]
            (folder / "per_query_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            summary = summarise([{k: v for k, v in r.items() if k not in ("query_id", "text")} for r in rows])
            (folder / "eval_test.json").write_text(json.dumps(summary))
            info = {"seconds": 1.0}
            if method != "Random":
                info["config"] = {"phase_lambda": phase_lambda, "n": n, "k": 5, "model": "tiny"}
            (folder / "done.json").write_text(json.dumps(info))
            if method in ("grpo", "fgrpo"):
                (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _log(method, seed)))
    return run_dir


@pytest.fixture
def run(tmp_path):
    root = write_synthetic_run(tmp_path / "run")
    write_synthetic_run(root / "sweeps" / "lambda_0.5", phase_lambda=0.5, hit_shift=-3)
    return root


def test_error_breakdown_shares(run):
    result = A.error_breakdown(run, "ml-1m")
    data = result.data.set_index(["method", "outcome"])
    assert data.loc[("F-GRPO", "hit"), "mean"] == pytest.approx(0.55)
    assert data.loc[("F-GRPO", "invalid"), "mean"] == pytest.approx(0.05)
    assert data.loc[("GRPO", "rank_drop"), "mean"] == pytest.approx(0.3)
    assert data.loc[("GRPO", "rank_drop"), "ci_low"] == pytest.approx(0.3)  # no spread across seeds
    assert data.loc[("Random", "slate_miss"), "mean"] == pytest.approx(0.9)
    shares = result.data.groupby("method")["mean"].sum()
    assert shares.to_numpy() == pytest.approx([1.0] * len(shares))
    assert any("GRPO: hit 30.0%" in n for n in result.notes)


def test_main_results_table_ci_and_columns(run):
    result = A.main_results_table(run)
    assert list(result.data.columns) == ["dataset", "method", "metric", "mean", "ci_low", "ci_high", "n_seeds"]
    assert set(result.data["metric"]) == set(A.TABLE_METRICS)
    assert set(result.data["method"]) == {"F-GRPO", "GRPO", "SFT", "Random"}
    row = result.data.set_index(["method", "metric"]).loc[("F-GRPO", "Hit@1")]
    half = T975_2 * 0.05 / math.sqrt(3)  # seeds give 0.50, 0.55, 0.60
    assert row["mean"] == pytest.approx(0.55)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.55 - half, 0.55 + half))
    assert row["n_seeds"] == 3
    assert result.data["method"].iloc[0] == "F-GRPO"  # ours first


def test_table_renderings(run, tmp_path):
    result = A.main_results_table(run)
    paths = A.save_table(result, tmp_path / "fig", {"split": "test"}, run)
    csv = pd.read_csv(paths[0])
    assert len(csv) == len(result.data)
    md, tex = paths[1].read_text(), paths[2].read_text()
    assert "| dataset | method |" in md and "55.0 ± 12.4" in md
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex
    sidecar = json.loads((tmp_path / "fig" / "main_results.json").read_text())
    assert sidecar["parameters"] == {"split": "test"} and len(sidecar["run_files"]) == 12


def test_paired_bootstrap_sign(run):
    test = A.paired_bootstrap(run, "ml-1m", "N@1", n_boot=500)
    assert test["n_pairs"] == 60 and test["n_seeds"] == 3
    assert test["mean"] == pytest.approx((4 + 5 + 6) / 60)
    assert test["ci_low"] > 0 and test["p_value"] < 0.01
    assert "F-GRPO beats GRPO" in A.bootstrap_verdict(test)
    # the lambda 0.5 sweep has F-GRPO hitting 3 fewer queries per seed: 1, 2, 3 more than GRPO
    worse = A.paired_bootstrap(run / "sweeps" / "lambda_0.5", "ml-1m", "N@1", n_boot=500)
    assert worse["mean"] == pytest.approx((1 + 2 + 3) / 60)


def test_paired_bootstrap_no_difference(tmp_path):
    run = write_synthetic_run(tmp_path / "run", hit_shift=-4)  # F-GRPO hits 6, 7, 8: ties then wins
    tie = A.paired_bootstrap(run, "ml-1m", "Hit@1", n_boot=200)
    assert tie["mean"] == pytest.approx(3 / 60)
    empty = A.paired_bootstrap(tmp_path / "nothing", "ml-1m")
    assert empty["n_pairs"] == 0 and "no paired" in A.bootstrap_verdict(empty)


def test_training_dynamics_slate_first(run):
    result = A.training_dynamics(run, "ml-1m", smooth=1)
    steps = result.data.set_index(["method", "phase"])["steps_to_fraction"]
    assert steps[("F-GRPO", "slate")] < steps[("F-GRPO", "ranking")]
    assert any("slate phase first" in n for n in result.notes)
    assert result.fig is not None and len(result.sources) == 6


def test_steps_to_fraction():
    curve = pd.DataFrame({"step": [1, 2, 3, 4], "mean": [-0.5, 0.0, 0.4, 0.5]})
    assert A.steps_to_fraction(curve, 0.9) == 3  # rise 1.0; 0.9 of it reached at 0.4
    assert A.steps_to_fraction(curve.assign(mean=0.0), 0.9) is None


def test_advantage_conflicts(run):
    result = A.advantage_conflicts(run, "ml-1m")
    data = result.data
    grpo = data[data["method"] == "GRPO"]
    assert grpo["applied_rate"].mean() == pytest.approx(0.21)
    fg = data[data["method"] == "F-GRPO"]
    assert (fg["applied_rate"] == 0).all() and fg["logged_rate"].mean() == pytest.approx(0.16)
    assert set(data["phase"]) == {"all tokens"}
    assert any("21.0%" in n for n in result.notes) and any("not in the logs" in n for n in result.notes)


def test_advantage_conflicts_per_phase_when_logged(tmp_path):
    run = write_synthetic_run(tmp_path / "run")
    for log in run.glob("train/*/seed*/*/log.jsonl"):
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        rows = [{**r, "phase/conflict_rate_gen": 0.3, "phase/conflict_rate_rank": 0.1} for r in rows]
        log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = A.advantage_conflicts(run, "ml-1m").data
    rates = data[data["method"] == "GRPO"].groupby("phase")["applied_rate"].mean()
    assert rates.to_dict() == pytest.approx({"slate tokens": 0.3, "ranking tokens": 0.1})


def test_sweeps_read_config_values(run):
    lam = A.lambda_sensitivity(run, "ml-1m")
    assert lam.status == "ok"
    f = lam.data[(lam.data["method"] == "F-GRPO") & (lam.data["metric"] == "N@1")].set_index("phase_lambda")
    assert f.loc[1.0, "mean"] == pytest.approx(0.55) and f.loc[0.5, "mean"] == pytest.approx(0.40)
    assert any("highest at lambda (ranking weight) = 1" in n for n in lam.notes)
    assert any(s.startswith("sweeps/lambda_0.5/") for s in lam.sources)
    size = A.slate_size(run, "ml-1m")
    assert size.status == "not run" and size.fig is None and "not run in this profile" in size.notes[0]


def test_a_multi_positive_run_is_another_setting_not_a_lambda_point(run):
    multi = write_synthetic_run(run / "sweeps" / "n_positives_3", hit_shift=5)  # lambda 1, like the main run
    for root, m in ((run, 1), (multi, 3)):  # notebook 01's record of the episodes
        (root / "data" / "ml-1m").mkdir(parents=True)
        (root / "data" / "ml-1m" / "params.json").write_text(json.dumps({"n_positives": m}))
    lam = A.lambda_sensitivity(run, "ml-1m")
    f = lam.data[(lam.data["method"] == "F-GRPO") & (lam.data["metric"] == "N@1")].set_index("phase_lambda")
    assert f.loc[1.0, "mean"] == pytest.approx(0.55) and f.loc[1.0, "n_seeds"] == 3  # the main run only
    assert not any("n_positives_3" in s for s in lam.sources)
    assert "sweeps/n_positives_3" in set(A.conflict_vs_gain(run).data["run"])


def test_slate_copy_rates_count_rankings_that_repeat_the_slate_order(tmp_path):
    folder = tmp_path / "train" / "ml-1m" / "seed0" / "grpo"
    folder.mkdir(parents=True)
    texts = ["<SLATE> c3 c1 c2 </SLATE> <RANK> c3 c1 </RANK>",  # the slate's first two, in order: a copy
             "<SLATE> c3 c1 c2 </SLATE> <RANK> c1 c3 </RANK>",  # reordered: a preference of its own
             "<SLATE> c3 c1 c2 </SLATE> <RANK> c9 </RANK>",  # invalid (c9 not in the slate): not counted
             "<SLATE> c4 c5 </SLATE> <RANK> c4 c5 </RANK>"]
    (folder / "per_query_test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (folder / "done.json").write_text(json.dumps({"config": {"n": 10, "k": 5}}))
    rates = A.slate_copy_rates(tmp_path, "ml-1m").set_index("method")
    assert rates.loc["GRPO", "valid"] == 3 and rates.loc["GRPO", "copy_rate"] == pytest.approx(2 / 3)


def test_conflict_vs_gain_one_point_per_setting(run):
    result = A.conflict_vs_gain(run)
    data = result.data
    assert set(data["run"]) == {".", "sweeps/lambda_0.5"}
    n1 = data[data["metric"] == "N@1"].set_index("run")
    assert n1.loc[".", "gain"] == pytest.approx(0.25) and n1.loc[".", "conflict"] == pytest.approx(0.21)
    assert n1.loc["sweeps/lambda_0.5", "gain"] == pytest.approx(0.10)


def test_save_result_files_and_sidecar(run, tmp_path):
    out = tmp_path / "fig"
    for result in (A.error_breakdown(run, "ml-1m"), A.slate_size(run, "ml-1m")):
        paths = A.save_result(result, out, {"dataset": "ml-1m"}, run)
        assert all(p.exists() and p.stat().st_size > 0 for p in paths)
        sidecar = json.loads((out / f"{result.name}.json").read_text())
        assert sidecar["parameters"] == {"dataset": "ml-1m"} and sidecar["status"] == result.status
        assert sidecar["files"] == [f"{result.name}.png", f"{result.name}.pdf"]
        assert "git_commit" in sidecar
    assert json.loads((out / "error_breakdown_ml-1m.json").read_text())["run_files"]


def test_empty_run_is_reported_not_raised(tmp_path):
    empty = tmp_path / "empty"
    assert A.datasets(empty) == []
    for result in (A.training_dynamics(empty, "ml-1m"), A.error_breakdown(empty, "ml-1m"),
                   A.advantage_conflicts(empty, "ml-1m"), A.conflict_vs_gain(empty), A.main_results_table(empty)):
        assert result.status in ("empty", "not run") and result.notes
    assert A.lambda_sensitivity(empty, "ml-1m").status == "not run"


def test_sentences(run, tmp_path):
    tests = [A.paired_bootstrap(run, "ml-1m", m, n_boot=200) for m in ("N@1", "ValidRatio")]
    text = A.win_summary(tests)
    assert "beats GRPO on 1 of 2 tests (ml-1m N@1)" in text and "no detectable difference on ml-1m ValidRatio" in text
    assert A.validity_note(A.main_results_table(run).data) == ""
    zero = A.main_results_table(run).data.assign(mean=0.0)
    assert "zero for want of valid output" in A.validity_note(zero)


def test_sweeps_hold_the_other_setting_fixed(run):
    write_synthetic_run(run / "sweeps" / "n_5", n=5, hit_shift=-6)  # lambda 1, another slate size
    lam = A.lambda_sensitivity(run, "ml-1m")
    f = lam.data[(lam.data["method"] == "F-GRPO") & (lam.data["metric"] == "N@1")].set_index("phase_lambda")
    assert f.loc[1.0, "mean"] == pytest.approx(0.55) and f.loc[1.0, "n_seeds"] == 3  # the n = 5 run is left out
    assert not any(s.startswith("sweeps/n_5/") for s in lam.sources)
    size = A.slate_size(run, "ml-1m")
    assert size.status == "ok" and set(size.data["n"]) == {5, 10}
    assert not any(s.startswith("sweeps/lambda_0.5/") for s in size.sources)


def test_conflict_vs_gain_note_reports_r_without_the_extreme_setting(monkeypatch):
    import numpy as np
    import pandas as pd

    from fgrpo_nb import analysis

    # one far-out setting makes r = +0.99; the other four alone are perfectly anti-correlated
    conflict = [0.02, 0.03, 0.04, 0.05, 0.30]
    gain = [0.04, 0.03, 0.02, 0.01, 0.50]
    rows = [{"setting": f"s{i}", "metric": "N@1", "conflict": c, "conflict_low": c, "conflict_high": c,
             "gain": g, "gain_low": g, "gain_high": g, "n_seeds": 2} for i, (c, g) in enumerate(zip(conflict, gain))]
    monkeypatch.setattr(analysis, "conflict_vs_gain_table", lambda *a, **k: (pd.DataFrame(rows), []))
    result = analysis.conflict_vs_gain("unused", metrics=("N@1",))
    r_all = np.corrcoef(conflict, gain)[0, 1]
    assert result.notes[0] == (f"N@1: across 5 settings, gain and conflict rate correlate at r = {r_all:+.2f}; "
                               "without the highest-conflict setting (s4) r = -1.00.")


def test_error_bars_are_clipped_to_the_quantitys_range_only_where_the_interval_leaves_it():
    from fgrpo_nb.analysis import clipped_error_bars

    below, above = clipped_error_bars([0.3, 0.9, 0.5], [-0.7, 0.8, 0.4], [1.4, 1.2, 0.6])
    assert below.tolist() == pytest.approx([0.3, 0.1, 0.1])  # the first reached -0.7: drawn down to 0
    assert above.tolist() == pytest.approx([0.7, 0.1, 0.1])  # the first two reached past 1: drawn up to 1
    below, above = clipped_error_bars([0.2], [-1.5], [0.9], (-1.0, 1.0))  # a gain lies in [-1, 1]
    assert below.tolist() == pytest.approx([1.2]) and above.tolist() == pytest.approx([0.7])
