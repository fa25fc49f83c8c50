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
    # the training notebooks, the profile's sweeps (notebook 03 per value), then notebook 04
    assert [name.split("_")[0] for name in timings] == ["01", "02", "03", "03b", "sweeps", "04"]
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
    for name, key, values in (("lambda_sensitivity_ml-1m", "phase_lambda", [0.5, 1.0]),
                              ("slate_size_ml-1m", "n", [5, 10])):
        sidecar = json.loads((figures / f"{name}.json").read_text())
        assert sidecar["status"] == "ok", sidecar["notes"]
        assert any(f.startswith(f"sweeps/{key}_") for f in sidecar["run_files"])


def test_share_sft_checkpoints_copies_finished_units_only(tmp_path):
    run, sweep = tmp_path / "run", tmp_path / "run" / "sweeps" / "phase_lambda_0.5"
    done = run / "train" / "ml-1m" / "seed0" / "sft"
    (done / "model").mkdir(parents=True)
    (done / "done.json").write_text('{"config": {"n": 10}}')
    (done / "model" / "model.safetensors").write_bytes(b"weights")
    unfinished = run / "train" / "ml-1m" / "seed1" / "sft"
    unfinished.mkdir(parents=True)
    copied = pipeline.share_sft_checkpoints(run, sweep)
    assert copied == [sweep / "train" / "ml-1m" / "seed0" / "sft"]
    assert (copied[0] / "model" / "model.safetensors").read_bytes() == b"weights"
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
