"""The papermill pipeline: error paths (fast) and the whole smoke profile end to end (slow)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from fgrpo_nb import pipeline

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("training_dynamics_ml-1m", "error_breakdown_ml-1m", "advantage_conflicts_ml-1m",
           "lambda_sensitivity_ml-1m", "slate_size_ml-1m", "conflict_vs_gain")


def test_unknown_profile_names_the_allowed_ones(capsys):
    assert pipeline.main(["--profile", "nope", "--only", "04"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'nope'" in err and "'smoke'" in err and "'cpu'" in err and "'gpu'" in err


def test_unknown_parameter_names_the_allowed_ones(capsys):
    assert pipeline.main(["--profile", "smoke", "--only", "04", "-p", "bogus", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter(s) ['bogus']" in err and "'n_bootstrap'" in err and "'run_dir'" in err


def test_profiles_pass_only_declared_keys():
    for name in pipeline.PROFILES:
        params = pipeline.resolve_profile(name)
        assert "{run_name}" not in json.dumps(params)
    declared = pipeline.notebook_parameters(ROOT / "notebooks" / "04_credit_assignment_analysis.ipynb")
    smoke = pipeline.resolve_profile("smoke")
    assert {k for k in smoke if k in declared} == {"run_dir", "figures_dir", "n_bootstrap"}
    assert pipeline.resolve_profile("gpu")["style"] == "chat"


def test_failing_notebook_exits_nonzero_naming_notebook_and_cell(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('run_dir: str = "runs/x"  # run folder', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise RuntimeError('broken on purpose')"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(nb, path)
    monkeypatch.setattr(pipeline, "list_notebooks", lambda *a: [path])
    with pytest.raises(SystemExit) as exit_info:
        pipeline.main(["--profile", "smoke", "-p", "run_dir", str(tmp_path / "run")])
    message = str(exit_info.value.code)
    assert exit_info.value.code not in (0, None)
    assert "99_broken.ipynb failed in cell" in message and "broken on purpose" in message
    assert (tmp_path / "run" / "notebooks" / "99_broken.ipynb").exists()  # the executed copy is kept


@pytest.mark.slow
def test_smoke_profile_end_to_end(tmp_path):
    run, figures = tmp_path / "run", tmp_path / "figures"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fgrpo_nb.pipeline", "--profile", "smoke", "-p", "run_dir", str(run),
                           "-p", "figures_dir", str(figures)], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    timings = json.loads((run / "pipeline_timings.json").read_text())  # the smoke budget: benchmarks, not here
    # the data notebooks, then (two processes) the training notebooks and the sweeps, then 04
    assert [name[:3] for name in timings] == ["01_", "02_", "03_", "03b", "swe", "swe", "swe", "par", "04_"]
    assert set(timings) >= {"sweep phase_lambda=0.5", "sweep n=5", "sweep n_positives=3"}
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (figures / f"{name}.{ext}").stat().st_size > 0
        sidecar = json.loads((figures / f"{name}.json").read_text())
        assert sidecar["git_commit"] and sidecar["parameters"]["run_dir"] == str(run)
        assert sidecar["status"] in ("ok", "not run") and sidecar["notes"]
    table = pd.read_csv(figures / "main_results.csv")
    assert list(table.columns) == ["dataset", "method", "metric", "mean", "ci_low", "ci_high", "n_seeds"]
    assert {"F-GRPO", "GRPO", "SFT", "Decoupled SFT", "Decoupled RL", "Random", "Popularity"} <= set(table["method"])
    rl_rows = table[table["method"].isin(["F-GRPO", "GRPO"]) & (table["dataset"] == "ml-1m")]
    assert set(rl_rows["n_seeds"]) == {2}  # both smoke seeds; SFT is one shared checkpoint (sft_seed)
    assert (figures / "main_results.md").exists() and (figures / "main_results.tex").exists()
    print(f"smoke pipeline wall time: {wall:.0f} s; per part: {timings}")
    # a lambda sweep starts from the main run's SFT checkpoint; a slate-size sweep trains its own
    main_sft = run / "train" / "ml-1m" / "seed0" / "sft"
    assert (run / "sweeps" / "phase_lambda_0.5" / main_sft.relative_to(run) / "done.json").read_text() == \
        (main_sft / "done.json").read_text()
    assert json.loads((run / "sweeps" / "n_5" / main_sft.relative_to(run) / "done.json").read_text())["config"]["n"] == 5
    # the multi-positive variant built its own episodes (three relevant items each) and SFT
    multi = run / "sweeps" / "n_positives_3"
    assert not (multi / "data").is_symlink() and (multi / main_sft.relative_to(run) / "done.json").exists()
    test_rows = [json.loads(line) for line in (multi / "data" / "ml-1m" / "test.jsonl").read_text().splitlines()]
    assert {len(row["relevant"]) for row in test_rows} == {3}
    conflict_files = json.loads((figures / "conflict_vs_gain.json").read_text())["run_files"]
    assert any(f.startswith("sweeps/n_positives_3/") for f in conflict_files)  # one more setting on the map
    for name, key, values in (("lambda_sensitivity_ml-1m", "phase_lambda", [0.5, 1.0]),
                              ("slate_size_ml-1m", "n", [5, 10])):
        sidecar = json.loads((figures / f"{name}.json").read_text())
        assert sidecar["status"] == "ok", sidecar["notes"]
        assert any(f.startswith(f"sweeps/{key}_") for f in sidecar["run_files"])


def _not_ready(finished):
    return False


def test_run_tasks_in_order_with_one_job_and_names_a_task_that_cannot_start():
    tasks = [pipeline.Task("a", pow, (2, 3)), pipeline.Task("b", pow, (3, 2), ready=lambda done: "a" in done)]
    assert pipeline.run_tasks(tasks, jobs=1) == {"a": 8, "b": 9}
    with pytest.raises(RuntimeError, match="task c is not ready"):
        pipeline.run_tasks([pipeline.Task("c", pow, (1, 1), ready=_not_ready)], jobs=1)


def test_run_tasks_in_parallel_waits_for_readiness_and_keeps_task_order():
    log = []
    tasks = [pipeline.Task("late", pow, (3, 2), ready=lambda done: "first" in done),
             pipeline.Task("first", pow, (2, 5))]
    assert list(pipeline.run_tasks(tasks, jobs=2, log=log.append, poll_s=0.05).items()) == [("late", 9),
                                                                                           ("first", 32)]
    assert [line.split()[2] for line in log] == ["first", "late"]  # "late" started only after "first" finished
    with pytest.raises(RuntimeError, match="can never start"):
        pipeline.run_tasks([pipeline.Task("c", pow, (1, 1), ready=_not_ready)], jobs=2, poll_s=0.05)


def test_a_failing_parallel_task_stops_the_others_and_names_its_error():
    start = time.perf_counter()
    tasks = [pipeline.Task("slow", time.sleep, (120,)), pipeline.Task("bad", int, ("x",)),
             pipeline.Task("exits", sys.exit, ("notebook 03 failed in cell 7",))]
    with pytest.raises(SystemExit, match="ValueError: invalid literal for int"):
        pipeline.run_tasks(tasks, jobs=2, poll_s=0.05)
    assert time.perf_counter() - start < 60  # the 120 s task was stopped, not waited for
    with pytest.raises(SystemExit, match="notebook 03 failed in cell 7"):
        pipeline.run_tasks(tasks[2:], jobs=2, poll_s=0.05)


def test_share_sft_checkpoints_copies_finished_units_only(tmp_path):
    run, sweep = tmp_path / "run", tmp_path / "run" / "sweeps" / "phase_lambda_0.5"
    done = run / "train" / "ml-1m" / "seed0" / "sft"
    (done / "model").mkdir(parents=True)
    (done / "done.json").write_text('{"config": {"n": 10}}')
    (done / "model" / "model.safetensors").write_bytes(b"weights")
    (done / "eval_test.json.tmp").write_text("{")  # being written by the main run: not copied
    unfinished = run / "train" / "ml-1m" / "seed1" / "sft"
    unfinished.mkdir(parents=True)
    copied = pipeline.share_sft_checkpoints(run, sweep)
    assert copied == [sweep / "train" / "ml-1m" / "seed0" / "sft"]
    assert (copied[0] / "model" / "model.safetensors").read_bytes() == b"weights"
    assert not (copied[0] / "eval_test.json.tmp").exists()
    assert not (sweep / "train" / "ml-1m" / "seed1").exists()
    assert pipeline.share_sft_checkpoints(run, sweep) == []  # a rerun leaves the copy alone


def test_every_profile_pairs_chat_prompts_with_no_feature_words():
    import ast

    declared = pipeline.notebook_parameters(ROOT / "notebooks" / "03_fgrpo_vs_grpo.ipynb")
    defaults = {k: ast.literal_eval(v["default"]) for k, v in declared.items() if k in ("style", "item_features")}
    for name in pipeline.PROFILES:
        params = {**defaults, **pipeline.resolve_profile(name)}
        # render_prompt refuses feature words in chat prompts: such a profile would fail in notebook 03
        assert params["style"] != "chat" or params["item_features"] == "none", name
