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
    # with the cpu profile's seed parts: their sharing of SFT units and run folders is what can race
    proc = subprocess.run([sys.executable, "-m", "fgrpo_nb.pipeline", "--profile", "smoke", "--seed-parts",
                           "-p", "run_dir", str(run), "-p", "figures_dir", str(figures)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    timings = json.loads((run / "pipeline_timings.json").read_text())  # the smoke budget: benchmarks, not here
    # the data notebooks, then (two processes) each seed of notebook 03 and of every sweep, 03b, the
    # whole notebooks (reporting on every seed), then 04
    assert list(timings)[:2] == ["01_data_preparation.ipynb", "02_reward_design.ipynb"]
    assert list(timings)[-2:] == ["parallel", "04_credit_assignment_analysis.ipynb"]
    wholes = {"03_fgrpo_vs_grpo.ipynb", "sweep phase_lambda=0.5", "sweep n=5", "sweep n_positives=3"}
    assert set(timings) == {*list(timings)[:2], *list(timings)[-2:], "03b_qa_fgrpo_vs_grpo.ipynb", *wholes,
                            "sweep n_positives=3 data", *(f"{w} seed {s}" for w in wholes for s in (0, 1))}
    assert (run / "notebooks" / "parts" / "03_fgrpo_vs_grpo_seed1.ipynb").exists()
    assert (run / "notebooks" / "03_fgrpo_vs_grpo.ipynb").exists()  # the whole notebook, every seed
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
    sft_rows = table[(table["method"] == "SFT") & (table["dataset"] == "ml-1m")]
    assert set(rl_rows["n_seeds"]) == {2} and set(sft_rows["n_seeds"]) == {2}  # an SFT per seed (sft_seed=-1)
    assert (figures / "main_results.md").exists() and (figures / "main_results.tex").exists()
    print(f"smoke pipeline wall time: {wall:.0f} s; per part: {timings}")
    # a lambda sweep starts from the main run's SFT checkpoint of each seed; a slate-size sweep trains its own
    for seed in (0, 1):
        main_sft = run / "train" / "ml-1m" / f"seed{seed}" / "sft"
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


def test_seed_parts_train_the_shared_sft_first_then_the_rest_then_the_whole_notebook(tmp_path):
    first, rest, whole = pipeline.seed_part_tasks("03", max, (7,), [1, 0, 2], 0, tmp_path, needs=("data",))
    assert [t.name for t in first] == ["03 seed 0"] and [t.name for t in rest] == ["03 seed 1", "03 seed 2"]
    assert first[0].args == (7, 0) and rest[0].args == (7, 1) and whole.args == (7, None)
    assert not first[0].ready(set()) and first[0].ready({"data"})  # every task waits for `needs`
    assert not rest[0].ready({"data"})  # seed 1 starts from seed 0's SFT checkpoint: not there yet
    done = tmp_path / "train" / "ml-1m" / "seed0" / "sft" / "done.json"
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    assert rest[0].ready({"data"}) and rest[1].ready({"data"})
    assert not whole.ready({"data", "03 seed 0", "03 seed 1"}) and whole.ready({"data", "03 seed 0", "03 seed 1",
                                                                                 "03 seed 2"})


def test_seed_parts_without_a_shared_sft_or_with_it_outside_the_seeds(tmp_path):
    first, rest, _ = pipeline.seed_part_tasks("03", max, (), [0, 1], -1, tmp_path)  # an SFT per seed
    assert [t.name for t in first] == ["03 seed 0", "03 seed 1"] and rest == []
    assert all(t.ready(set()) for t in first)
    first, rest, _ = pipeline.seed_part_tasks("03", max, (), [2, 3], 0, tmp_path)  # seed 2's part trains it
    assert [t.name for t in first] == ["03 seed 2"] and not rest[0].ready(set())
    waits = lambda seed, finished: "main" in finished  # noqa: E731 - a sweep on the main run's SFT
    first, rest, _ = pipeline.seed_part_tasks("s", max, (), [0, 1], 0, tmp_path, waits_for_sft=waits)
    assert first == [] and [t.ready(set()) for t in rest] == [False, False] and rest[1].ready({"main"})


def test_run_all_splits_the_cpu_profile_into_seed_parts(tmp_path, monkeypatch):
    """The task list of the default profile: 03b first (the longest single task), then what
    others wait for and every part with an SFT of its own (an SFT per seed: sft_seed=-1), the
    parts on the main run's SFTs, the whole notebooks; and timings keyed by task (no training:
    both runners are stubs)."""
    calls, captured = [], []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda profile, overrides, notebooks, *a, **k: calls.append(
        [nb.name[:3] for nb in notebooks]) or {nb.name: 1.0 for nb in notebooks})

    def fake_run_tasks(tasks, jobs, log):
        captured.extend(tasks)
        return {t.name: {t.name: 2.0} for t in tasks}

    monkeypatch.setattr(pipeline, "run_tasks", fake_run_tasks)
    timings = pipeline.run_all("cpu", {"run_dir": str(tmp_path)})
    assert pipeline.PROFILES["cpu"]["seed_parts"] and not pipeline.PROFILES["smoke"].get("seed_parts")
    main, qa = "03_fgrpo_vs_grpo.ipynb", "03b_qa_fgrpo_vs_grpo.ipynb"
    assert [t.name for t in captured] == [
        qa, f"{main} seed 0", f"{main} seed 1", f"{main} seed 2", f"{main} seed 3",
        "sweep n_positives=3 data", "sweep n_positives=3 seed 0", "sweep n_positives=3 seed 1",
        "sweep n=5 seed 0", "sweep n=5 seed 1", "sweep n=15 seed 0", "sweep n=15 seed 1",
        "sweep phase_lambda=0.5 seed 0", "sweep phase_lambda=0.5 seed 1",
        main, "sweep phase_lambda=0.5", "sweep n_positives=3", "sweep n=5", "sweep n=15"]
    tasks = {t.name: t for t in captured}
    assert tasks[f"{main} seed 2"].args[-1] == 2 and tasks["sweep n_positives=3 data"].args[-1] == ("01",)
    assert tasks["sweep n_positives=3 seed 1"].args[-2:] == (("03",), 1)
    assert tasks["sweep n=15 seed 1"].args[2:4] == ("n", 15)
    # nothing trained yet: every part with its own SFT can start, the multi-positive ones after their episodes
    assert {n for n, t in tasks.items() if t.ready(set())} == {
        qa, "sweep n_positives=3 data", *(f"{main} seed {s}" for s in range(4)),
        *(f"sweep n={n} seed {s}" for n in (5, 15) for s in (0, 1))}
    assert tasks["sweep n_positives=3 seed 1"].ready({"sweep n_positives=3 data"})
    # lambda's seed 1 starts from the main run's seed-1 SFT (an SFT per seed), not seed 0's
    lam1 = tasks["sweep phase_lambda=0.5 seed 1"]
    assert not lam1.ready(set()) and lam1.ready({main})
    for seed in (0, 1):
        done = tmp_path / "train" / "ml-1m" / f"seed{seed}" / "sft" / "done.json"
        done.parent.mkdir(parents=True)
        done.write_text("{}")
        assert lam1.ready(set()) == (seed == 1)
    assert calls == [["01_", "02_"], ["04_"]]
    assert timings[f"{main} seed 3"] == 2.0 and "parallel" in timings
    assert json.loads((tmp_path / "pipeline_timings.json").read_text())[main] == 2.0


def test_run_all_without_seed_parts_runs_each_notebook_and_sweep_as_one_task(tmp_path, monkeypatch):
    captured = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: {})
    monkeypatch.setattr(pipeline, "run_tasks", lambda tasks, jobs, log: captured.extend(tasks) or
                        {t.name: {t.name: 1.0} for t in tasks})
    pipeline.run_all("smoke", {"run_dir": str(tmp_path)})  # the smoke profile: two jobs, no parts
    assert [t.name for t in captured] == ["03_fgrpo_vs_grpo.ipynb", "03b_qa_fgrpo_vs_grpo.ipynb",
                                          "sweep phase_lambda=0.5", "sweep n=5", "sweep n_positives=3"]
    ready = {t.name for t in captured if t.ready(set())}
    assert ready == {"03_fgrpo_vs_grpo.ipynb", "03b_qa_fgrpo_vs_grpo.ipynb", "sweep n=5", "sweep n_positives=3"}
    assert [t for t in captured if t.name == "sweep phase_lambda=0.5"][0].ready({"03_fgrpo_vs_grpo.ipynb"})
    assert captured[-1].args[-1] is None  # notebook 01 then 03 in one task: no separate data task
