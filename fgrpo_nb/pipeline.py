"""Run the numbered notebooks in order through papermill with one profile of parameters.

    python -m fgrpo_nb.pipeline --profile cpu            # what `make figures` runs
    python -m fgrpo_nb.pipeline --profile smoke -p seeds 2 -p run_name try1

Executed notebooks are kept under `runs/<run_name>/notebooks/`; figures go to the
profile's `figures_dir`. A failing notebook is named with its failing cell and the
pipeline stops with a non-zero exit, so a batch rerun never silently skips a step.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"

# One place for profile defaults. Keys a notebook does not declare in its parameters
# cell are not passed to it, so every notebook sees only what it understands.
_COMMON = {"run_dir": "runs/{run_name}", "figures_dir": "figures"}
PROFILES: dict[str, dict] = {
    # tiny sizes for tests and a first look: minutes, not an experiment (metrics near zero)
    "smoke": {
        "run_name": "smoke",
        "figures_dir": "runs/{run_name}/figures",
        "profile": "smoke",
        "n_train": 300,  # 01: episodes kept per split
        "n_val": 16,
        "n_test": 16,
        "n_episodes": 40,  # 02: test episodes scored
        "seeds": [0, 1],  # 03: two seeds, so intervals and paired tests have something to work on
        "sft_episodes": 64,
        "rl_steps": 3,
        "prompts_per_step": 2,
        "group_size": 4,
        "max_completion_length": 24,
        "n_eval": 16,
        "baselines": ["random", "popularity"],  # SASRec and the zero-shot LLM cost minutes
        "decoupled_seeds": [0],
        "qa_seeds": [0],  # 03b: SmolLM2 plumbing only
        "qa_sft_episodes": 4,
        "qa_sft_batch_size": 2,
        "qa_rl_steps": 1,
        "qa_prompts_per_step": 1,
        "qa_group_size": 2,
        "qa_max_completion_length": 12,
        "qa_n_test": 2,
        "qa_n_val": 0,
        "n_bootstrap": 200,  # 04: bootstrap resamples
        # one extra value each; n_positives builds its own episodes (notebook 01) and SFT
        "sweeps": {"phase_lambda": [0.5], "n": [5], "n_positives": [3]},
        "jobs": 2,  # 03, 03b and the sweeps on two processes (run_all)
    },
    # the default: what the committed figures come from (2-core CPU; the goal is 45 minutes, README);
    # notebook 03 values: chosen from the SFT probes named in the comments, RL lr from the probe
    "cpu": {
        "run_name": "cpu",
        "profile": "cpu",
        "seeds": [0, 1, 2, 3],
        "item_features": "popularity",  # measured: without it SFT stays at random-level Hit@1 (README)
        "sft_rank_filler": "pool",  # measured: teacher-ordered filler left 99% of greedy rankings invalid
        "sft_episodes": 10000,
        # one epoch, not two (validation users, benchmarks/tune_rl.py): from two epochs no RL
        # setting improved on SFT; from one both methods raise validity, Hit@1 and NDCG@5
        "sft_epochs": 1.0,
        "sft_lr": 3e-3,
        "sft_seed": 0,
        # RL tuned on validation users (benchmarks/tune_rl.py, README): 1e-3 collapsed the slates
        "rl_steps": 150,
        "prompts_per_step": 8,
        "group_size": 8,
        "lr": 3e-4,
        "phase_lambda": 1.0,
        "n": 10,
        "k": 5,
        "n_eval": 1000,
        # the zero-shot SmolLM2 rows wrote no valid rollout on 20 users (README) and cost minutes:
        # the gpu profile runs them
        "baselines": ["random", "popularity", "sasrec"],
        "decoupled_seeds": [],  # two more SFTs per seed: over the 45-minute budget (smoke runs them)
        # 03b: SmolLM2 on HotpotQA, one seed, sized to about 11 minutes (pilot table in 03b):
        # 64 SFT updates of batch 1 reach valid rollouts; the shared prompt prefix makes 20 RL
        # steps per method affordable
        "qa_seeds": [0],
        "qa_sft_episodes": 64,
        "qa_sft_batch_size": 1,
        "qa_sft_lr": 3e-3,
        "qa_rl_steps": 20,
        "qa_lr": 1e-3,
        "qa_prompts_per_step": 1,
        "qa_group_size": 4,
        "qa_n_test": 40,
        "qa_n_val": 0,
        "n_bootstrap": 2000,
        # lambda from the main run's SFT checkpoint; the multi-positive variant (the next 3 items
        # relevant: its own episodes and SFT); two seeds each. A slate-size sweep needs an SFT per
        # size: over the budget, so the gpu profile's
        "sweeps": {"phase_lambda": [0.5], "n_positives": [3]},
        "sweep_overrides": {"seeds": [0, 1], "baselines": [], "decoupled_seeds": []},
        "jobs": 2,  # 03, 03b and the sweeps on two processes, one per core
    },
    # for users with a GPU and the hub; untested here. Qwen3-4B-Instruct-2507 in chat
    # style, the paper's group size and RL length; learning rates for a full-weight 4B model.
    "gpu": {
        "run_name": "gpu",
        "figures_dir": "runs/{run_name}/figures",
        "profile": "gpu",
        "model": "Qwen/Qwen3-4B-Instruct-2507",
        "style": "chat",
        "item_features": "none",  # chat prompts show titles; feature words are for the tiny ID model
        "seeds": [0, 1, 2],
        "sft_episodes": 3200,
        "sft_lr": 1e-5,
        "rl_steps": 200,
        "prompts_per_step": 8,
        "group_size": 8,
        "lr": 1e-6,
        "max_completion_length": 128,
        "n_eval": 1000,
        "decoupled_seeds": [0, 1, 2],
        "zero_shot_episodes": 1000,
        "qa_model": "Qwen/Qwen3-4B-Instruct-2507",
        "qa_passage_words": -1,
        "qa_lora_r": 0,
        "qa_sft_episodes": 633,
        "qa_rl_steps": 200,
        "qa_prompts_per_step": 8,
        "qa_group_size": 8,
        "qa_lr": 1e-6,
        "qa_sft_lr": 1e-5,
        "qa_max_completion_length": 64,
        "qa_n_test": 447,
        "qa_n_val": 120,
        "qa_seeds": [0, 1, 2],
        "n_bootstrap": 2000,
        "sweeps": {"phase_lambda": [0.25, 0.5, 2.0], "n": [5, 15]},  # the paper's lambda and slate-size sweeps
    },
}


def list_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    return sorted(p for p in notebook_dir.glob("[0-9][0-9]*_*.ipynb"))  # 03b_ sorts after 03_


def notebook_parameters(path: Path) -> dict[str, dict]:
    import papermill

    return papermill.inspect_notebook(str(path))


def resolve_profile(profile: str, overrides: dict[str, object] | None = None) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {sorted(PROFILES)}")
    params = {**_COMMON, **PROFILES[profile], **(overrides or {})}
    run_name = str(params["run_name"])
    return {k: v.format(run_name=run_name) if isinstance(v, str) else v for k, v in params.items()}


def parse_override(value: str) -> object:
    """`-p seeds 3` gives int 3, `-p seeds [0,1]` a list, anything else stays a string."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def check_overrides(overrides: dict, notebooks: list[Path]) -> None:
    known = {"run_name"} | {k for nb in notebooks for k in notebook_parameters(nb)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; allowed: {sorted(known)}")


def run_pipeline(profile: str = "cpu", overrides: dict | None = None,
                 notebooks: list[Path] | None = None, log=print, record: bool = True) -> dict[str, float]:
    """Execute the notebooks in order; return wall seconds per notebook. With `record` the
    times are merged into <run_dir>/pipeline_timings.json (`run_all`'s parallel tasks leave
    that to the parent, so two processes never write the file at once)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebooks = list_notebooks() if notebooks is None else notebooks
    overrides = overrides or {}
    # against every notebook: run_all runs them in parts, each part ignoring the others' keys
    check_overrides(overrides, list(dict.fromkeys([*list_notebooks(), *notebooks])))
    params = resolve_profile(profile, overrides)
    run_dir = REPO_ROOT / params["run_dir"]
    out_dir = run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    for nb in notebooks:
        declared = notebook_parameters(nb)
        nb_params = {k: v for k, v in params.items() if k in declared}
        log(f"[pipeline] {nb.name} ({profile}) ...")
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(nb), str(out_dir / nb.name), parameters=nb_params,
                kernel_name="python3", cwd=str(REPO_ROOT), progress_bar=False,
            )
        except PapermillExecutionError as err:
            raise SystemExit(
                f"[pipeline] {nb.name} failed in cell {err.cell_index} "
                f"(execution count {err.exec_count}): {err.ename}: {err.evalue}\n"
                f"executed copy: {out_dir / nb.name}"
            ) from None
        timings[nb.name] = round(time.perf_counter() - start, 1)
        log(f"[pipeline] {nb.name} done in {timings[nb.name]:.0f} s")
    if record:
        _merge_timings(run_dir, timings)
    return timings


def _merge_timings(run_dir: Path, timings: dict[str, float]) -> None:
    """Merge into <run_dir>/pipeline_timings.json, so a partial rerun (--only) keeps the
    times of the notebooks it did not run."""
    path = run_dir / "pipeline_timings.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, **timings}, indent=2) + "\n")


def sweep_dir(run_dir: Path, key: str, value) -> Path:
    """Where one sweep setting's run lives: <run_dir>/sweeps/<key>_<value> (analysis.sweep_runs)."""
    return Path(run_dir) / "sweeps" / f"{key}_{value}"


def sweep_notebooks(key: str) -> list[Path]:
    """What one sweep setting runs: notebook 03, after notebook 01 when the key shapes the
    episodes (e.g. `n_positives`); such a sweep builds its own episodes instead of sharing."""
    notebooks = list_notebooks()
    data = [nb for nb in notebooks if nb.name.startswith("01_") and key in notebook_parameters(nb)]
    return data + [nb for nb in notebooks if nb.name.startswith("03_")]


def run_sweep(profile: str, overrides: dict | None, key: str, value, log=print) -> dict[str, float]:
    """One sweep setting: its notebooks (`sweep_notebooks`) into <run_dir>/sweeps/<key>_<value>/,
    sharing the main run's episodes (a symlink to <run_dir>/data) unless the key shapes them,
    and, when the key does not change SFT either, its finished SFT checkpoints (copied;
    `reuse_if_done` checks that they match). The profile's `sweep_overrides` (e.g. fewer
    seeds) apply to sweep runs only. Returns wall seconds per notebook."""
    from .experiment import SFT_FIELDS  # torch and transformers: only when sweeps run

    overrides = overrides or {}
    params = resolve_profile(profile, overrides)
    sweep_overrides = {k: v for k, v in params.get("sweep_overrides", {}).items() if k not in overrides}
    run_dir = REPO_ROOT / params["run_dir"]
    notebooks = sweep_notebooks(key)
    own_episodes = notebooks[0].name.startswith("01_")
    folder = sweep_dir(run_dir, key, value)
    folder.mkdir(parents=True, exist_ok=True)
    if not own_episodes and (run_dir / "data").exists() and not (folder / "data").exists():
        (folder / "data").symlink_to((run_dir / "data").resolve(), target_is_directory=True)
    if not own_episodes and key not in SFT_FIELDS:
        share_sft_checkpoints(run_dir, folder)
    log(f"[pipeline] sweep {key} = {value} -> {folder}")
    return run_pipeline(profile, {**sweep_overrides, **overrides, "run_dir": str(folder),
                                  "figures_dir": str(folder / "figures"), key: value}, notebooks, log)


def run_sweeps(profile: str = "cpu", overrides: dict | None = None, sweeps: dict | None = None,
               log=print) -> dict[str, dict[str, float]]:
    """Every setting of the profile's `sweeps` (e.g. {"phase_lambda": [0.5]}), one after the
    other (`run_sweep`); `run_all` runs them as parallel tasks instead. Returns wall seconds
    per notebook per sweep folder."""
    params = resolve_profile(profile, overrides)
    sweeps = params.get("sweeps", {}) if sweeps is None else sweeps
    return {f"{key}_{value}": run_sweep(profile, overrides, key, value, log)
            for key, values in sweeps.items() for value in values}


def share_sft_checkpoints(run_dir: Path, sweep_folder: Path) -> list[Path]:
    """Copy the main run's finished SFT units into a sweep run that does not change SFT, so
    the sweep's RL starts from the very checkpoints of the main comparison."""
    import shutil

    copied = []
    for unit in sorted(Path(run_dir).glob("train/*/seed*/sft")):
        target = sweep_folder / unit.relative_to(run_dir)
        if (unit / "done.json").exists() and not target.exists():
            shutil.copytree(unit, target, ignore=shutil.ignore_patterns("*.tmp"))  # half-written files
            copied.append(target)
    return copied


PREP_PREFIXES = ("01", "02")  # notebooks whose run files every later one reads: they run first
ANALYSIS_PREFIXES = ("04",)  # notebooks that only read run folders: they run after the sweeps


@dataclass
class Task:
    """One independent piece of `run_all`: a picklable call, and when it may start (given the
    names of the tasks finished so far)."""

    name: str
    fn: Callable
    args: tuple
    ready: Callable[[set], bool] = lambda finished: True


def _call(fn: Callable, args: tuple) -> tuple[bool, object]:
    """Run a task in a worker; a failure (the pipeline's SystemExit included) comes back as a
    message instead of killing the worker, so the parent can name it and stop the rest."""
    try:
        return True, fn(*args)
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which exits non-zero
        return False, f"{type(err).__name__}: {err}" if not isinstance(err, SystemExit) else str(err.code)


def run_tasks(tasks: list[Task], jobs: int = 1, log=print, poll_s: float = 2.0) -> dict[str, object]:
    """Run `tasks` on `jobs` processes (in this process, in order, when jobs is 1), each as
    soon as a process is free and its `ready()` holds. The first failure stops the others and
    raises SystemExit with its message. Returns {name: result} in the tasks' order."""
    if jobs <= 1:
        results = {}
        for task in tasks:
            if not task.ready(set(results)):
                raise RuntimeError(f"task {task.name} is not ready although every earlier task finished")
            ok, value = _call(task.fn, task.args)
            if not ok:
                raise SystemExit(value)
            results[task.name] = value
        return results
    import multiprocessing

    # spawn: a fresh interpreter per task (no forked torch threads), one task per process
    pool = multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=1)
    pending, running, results = list(tasks), {}, {}
    try:
        while pending or running:
            for task in [t for t in pending if t.ready(set(results))][: jobs - len(running)]:
                pending.remove(task)
                running[task.name] = pool.apply_async(_call, (task.fn, task.args))
                log(f"[pipeline] started {task.name} ({len(running)} of {jobs} processes busy)")
            if pending and not running:
                raise RuntimeError(f"tasks {[t.name for t in pending]} can never start: nothing running makes "
                                   "them ready")
            for name, handle in list(running.items()):
                if handle.ready():
                    del running[name]
                    ok, value = handle.get()
                    if not ok:
                        raise SystemExit(value)
                    results[name] = value
            time.sleep(poll_s if running else 0)
    finally:
        pool.terminate()  # after a failure: stop the other tasks now rather than after hours
        pool.join()
    return {t.name: results[t.name] for t in tasks}


def _sft_ready(run_dir: Path, sft_seed) -> bool:
    """True when the main run's shared SFT checkpoint is finished (runs with one `sft_seed`)."""
    return isinstance(sft_seed, int) and sft_seed >= 0 and any(Path(run_dir).glob(f"train/*/seed{sft_seed}/sft/done.json"))


def run_all(profile: str = "cpu", overrides: dict | None = None, log=print, jobs: int | None = None
            ) -> dict[str, float]:
    """What `make figures` runs: the data notebooks (01, 02); then, on `jobs` processes (the
    profile's `jobs`, default 1), the training notebooks (03, 03b) and every sweep setting,
    a sweep that reuses the main SFT checkpoint starting once it is finished; then the analysis
    notebooks (so they draw the sweeps too). Returns wall seconds per part, also merged into
    <run_dir>/pipeline_timings.json, with `parallel` the wall time of the parallel stage."""
    from .experiment import SFT_FIELDS

    params = resolve_profile(profile, overrides)
    jobs = int(params.get("jobs", 1) if jobs is None else jobs)
    run_dir = REPO_ROOT / params["run_dir"]
    notebooks = list_notebooks()
    prep = [nb for nb in notebooks if nb.name.startswith(PREP_PREFIXES)]
    analysis = [nb for nb in notebooks if nb.name.startswith(ANALYSIS_PREFIXES)]
    training = [nb for nb in notebooks if nb not in prep and nb not in analysis]
    timings = run_pipeline(profile, overrides, prep, log)
    main = next((nb for nb in training if nb.name.startswith("03_")), None)
    main_name = main.name if main else None
    sft_seed = params.get("sft_seed", ast.literal_eval(notebook_parameters(main)["sft_seed"]["default"]) if main else None)
    tasks = [Task(nb.name, run_pipeline, (profile, overrides, [nb], print, False)) for nb in training]
    for key, values in params.get("sweeps", {}).items():
        shares_sft = key not in SFT_FIELDS and len(sweep_notebooks(key)) == 1
        for value in values:
            task = Task(f"sweep {key}={value}", run_sweep, (profile, overrides, key, value, print))
            if shares_sft:  # starts from the main run's SFT checkpoint: wait for it
                task.ready = lambda finished: main_name in finished or _sft_ready(run_dir, sft_seed)
            tasks.append(task)
    start = time.perf_counter()
    results = run_tasks(tasks, jobs, log)
    parallel = round(time.perf_counter() - start, 1)
    for name, value in results.items():  # a notebook's time, or a sweep's total
        timings[name] = value[name] if name in value else round(sum(value.values()), 1)
    timings["parallel"] = parallel
    _merge_timings(run_dir, {k: v for k, v in timings.items() if k not in {nb.name for nb in prep}})
    timings.update(run_pipeline(profile, overrides, analysis, log))
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", help=f"one of {sorted(PROFILES)}")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="override one parameter (repeatable)")
    parser.add_argument("--jobs", type=int, help="processes for notebooks 03, 03b and the sweeps "
                        "(default: the profile's jobs); each uses one core with OMP_NUM_THREADS=1")
    parser.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these prefixes "
                        "(e.g. 04); without it: every notebook and the profile's sweeps")
    args = parser.parse_args(argv)
    overrides = {k: parse_override(v) for k, v in args.p}
    try:
        if args.only:
            run_pipeline(args.profile, overrides,
                         [nb for nb in list_notebooks() if nb.name.startswith(tuple(args.only))])
        else:
            check_overrides(overrides, list_notebooks())
            run_all(args.profile, overrides, jobs=args.jobs)
    except ValueError as err:
        print(f"[pipeline] error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
