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
import os
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
        # an SFT per seed, so the seed interval covers the start: two runs sharing one start, whose
        # checkpoints differed by float rounding, gave different verdicts (README)
        "sft_seed": -1,
        # RL tuned on validation users (benchmarks/tune_rl.py, README): 1e-3 collapsed the slates
        "rl_steps": 150,
        "prompts_per_step": 8,
        "group_size": 8,
        "lr": 3e-4,
        "phase_lambda": 1.0,
        "n": 10,
        "k": 5,
        "max_completion_length": 25,  # a full rollout at the slate-size sweep's n=15 (ExperimentConfig)
        "n_eval": 1000,
        # the zero-shot SmolLM2 rows wrote no valid rollout on 20 users (README) and cost minutes:
        # the gpu profile runs them
        "baselines": ["random", "popularity", "sasrec"],
        # the Decoupled SFT / RL rows on one seed: a selector and a ranker, each an SFT and an RL
        # run (two seeds' worth would pass the 45-minute budget)
        "decoupled_seeds": [0],
        # 03b: SmolLM2 on HotpotQA, one seed, sized to about 11 minutes on a slow day (pilot table in
        # 03b; 514 s in the README run):
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
        # lambda from the main run's SFT checkpoints; the multi-positive variant (the next 3 items
        # relevant: its own episodes and SFTs); slate sizes 5 and 15 (an SFT each); two seeds each
        "sweeps": {"phase_lambda": [0.5], "n_positives": [3], "n": [5, 15]},
        "sweep_overrides": {"seeds": [0, 1], "baselines": [], "decoupled_seeds": []},
        "jobs": 2,  # 03, 03b and the sweeps on two processes, one per core
        "seed_parts": True,  # ... each seed a task of its own (run_all): 03 alone was the longest path
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


SEED_LIST_KEYS = ("seeds", "decoupled_seeds", "qa_seeds")  # parameters that list seeds: a seed part keeps one


def run_pipeline(profile: str = "cpu", overrides: dict | None = None,
                 notebooks: list[Path] | None = None, log=print, record: bool = True,
                 seed: int | None = None) -> dict[str, float]:
    """Execute the notebooks in order; return wall seconds per notebook. With `record` the
    times are merged into <run_dir>/pipeline_timings.json (`run_all`'s parallel tasks leave
    that to the parent, so two processes never write the file at once).

    With `seed`, each notebook runs for that seed only (its seed lists keep that seed): a part
    of `run_all`'s parallel stage, which trains one seed's units into the shared run folder.
    Its executed copy and figures go to <run_dir>/notebooks/parts/, its time to the key
    "<notebook> seed <seed>"."""
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
        name, executed = nb.name, out_dir / nb.name
        if seed is not None:
            for key in (k for k in SEED_LIST_KEYS if k in declared):
                values = nb_params.get(key, _declared_default(declared, key))
                nb_params[key] = [s for s in values if s == seed]
            name, executed = f"{nb.name} seed {seed}", out_dir / "parts" / f"{nb.stem}_seed{seed}.ipynb"
            if "figures_dir" in declared:  # a part's figures show one seed: not the run's figures
                nb_params["figures_dir"] = str(out_dir / "parts" / f"figures_seed{seed}")
            executed.parent.mkdir(exist_ok=True)
        log(f"[pipeline] {name} ({profile}) ...")
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(nb), str(executed), parameters=nb_params,
                kernel_name="python3", cwd=str(REPO_ROOT), progress_bar=False,
            )
        except PapermillExecutionError as err:
            raise SystemExit(
                f"[pipeline] {name} failed in cell {err.cell_index} "
                f"(execution count {err.exec_count}): {err.ename}: {err.evalue}\n"
                f"executed copy: {executed}"
            ) from None
        timings[name] = round(time.perf_counter() - start, 1)
        log(f"[pipeline] {name} done in {timings[name]:.0f} s")
    if record:
        _merge_timings(run_dir, timings)
    return timings


def _merge_timings(run_dir: Path, timings: dict[str, float]) -> None:
    """Merge into <run_dir>/pipeline_timings.json, so a partial rerun (--only) keeps the
    times of the notebooks it did not run."""
    path = run_dir / "pipeline_timings.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # seed parts of one sweep share the file
    temporary.write_text(json.dumps({**previous, **timings}, indent=2) + "\n")
    os.replace(temporary, path)


def sweep_dir(run_dir: Path, key: str, value) -> Path:
    """Where one sweep setting's run lives: <run_dir>/sweeps/<key>_<value> (analysis.sweep_runs)."""
    return Path(run_dir) / "sweeps" / f"{key}_{value}"


def sweep_notebooks(key: str) -> list[Path]:
    """What one sweep setting runs: notebook 03, after notebook 01 when the key shapes the
    episodes (e.g. `n_positives`); such a sweep builds its own episodes instead of sharing."""
    notebooks = list_notebooks()
    data = [nb for nb in notebooks if nb.name.startswith("01_") and key in notebook_parameters(nb)]
    return data + [nb for nb in notebooks if nb.name.startswith("03_")]


def sweep_parameters(profile: str, overrides: dict | None, key: str, value) -> dict:
    """The overrides one sweep setting's notebooks run with: the profile's `sweep_overrides`
    (e.g. fewer seeds; a command-line override wins), its own run folder and figures, the value."""
    overrides = overrides or {}
    params = resolve_profile(profile, overrides)
    sweep_overrides = {k: v for k, v in params.get("sweep_overrides", {}).items() if k not in overrides}
    folder = sweep_dir(REPO_ROOT / params["run_dir"], key, value)
    return {**sweep_overrides, **overrides, "run_dir": str(folder), "figures_dir": str(folder / "figures"), key: value}


def run_sweep(profile: str, overrides: dict | None, key: str, value, log=print,
              only: tuple[str, ...] | None = None, seed: int | None = None) -> dict[str, float]:
    """One sweep setting: its notebooks (`sweep_notebooks`; with `only`, those whose names start
    with these prefixes; with `seed`, for that seed only) into <run_dir>/sweeps/<key>_<value>/,
    sharing the main run's episodes (a symlink to <run_dir>/data) unless the key shapes them,
    and, when the key does not change SFT either, its finished SFT checkpoints (copied;
    `reuse_if_done` checks that they match). The profile's `sweep_overrides` (e.g. fewer
    seeds) apply to sweep runs only. Returns wall seconds per notebook."""
    from .experiment import SFT_FIELDS  # torch and transformers: only when sweeps run

    params = resolve_profile(profile, overrides)
    run_dir = REPO_ROOT / params["run_dir"]
    notebooks = sweep_notebooks(key)
    own_episodes = notebooks[0].name.startswith("01_")
    folder = sweep_dir(run_dir, key, value)
    folder.mkdir(parents=True, exist_ok=True)
    if not own_episodes and (run_dir / "data").exists() and not (folder / "data").exists():
        try:
            (folder / "data").symlink_to((run_dir / "data").resolve(), target_is_directory=True)
        except FileExistsError:  # another seed part of this setting made it a moment ago
            pass
    if not own_episodes and key not in SFT_FIELDS:
        share_sft_checkpoints(run_dir, folder)
    log(f"[pipeline] sweep {key} = {value} -> {folder}")
    notebooks = [nb for nb in notebooks if only is None or nb.name.startswith(only)]
    return run_pipeline(profile, sweep_parameters(profile, overrides, key, value), notebooks, log, seed=seed)


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
            # copied aside, then renamed into place: seed parts of one sweep run side by side and
            # each shares what is finished, so a unit folder must appear whole or not at all
            scratch = sweep_folder / ".sharing" / f"{os.getpid()}"
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.copytree(unit, scratch, ignore=shutil.ignore_patterns("*.tmp"))  # half-written files
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(scratch, target)
                copied.append(target)
            except OSError:  # another part put it there first
                shutil.rmtree(scratch)
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
    """True when the SFT checkpoint of seed `sft_seed` in `run_dir` is finished."""
    return isinstance(sft_seed, int) and sft_seed >= 0 and any(Path(run_dir).glob(f"train/*/seed{sft_seed}/sft/done.json"))


def _parameter(params: dict, key: str, notebook: Path | None):
    """A parameter as a notebook will see it: the profile's or override's value, else its default."""
    if key in params or notebook is None:
        return params.get(key)
    return _declared_default(notebook_parameters(notebook), key)


def _declared_default(declared: dict[str, dict], key: str):
    """The default value a notebook's parameters cell gives `key` (None when it declares none)."""
    return ast.literal_eval(declared[key]["default"]) if key in declared else None


def seed_part_tasks(name: str, fn: Callable, args: tuple, seeds: list, sft_seed, sft_folder: Path,
                    needs: tuple[str, ...] = (), waits_for_sft=None) -> tuple[list[Task], list[Task], Task]:
    """Notebook 03 (or one sweep setting's) split for `run_tasks`: one task per seed, `fn(*args,
    seed)`, then `fn(*args, None)`, the whole notebook, which finds every unit finished and
    only reports. Units of different seeds are independent once the SFT they start from
    exists: when every seed shares one (`sft_seed` >= 0), the part that trains it runs first
    and the others wait for its checkpoint in `sft_folder`; `waits_for_sft(seed, finished)`
    replaces that rule (a sweep starting from the main run's checkpoints). Every task waits
    for `needs`. Returns (parts that train an SFT, the other parts, the whole notebook)."""
    shared = isinstance(sft_seed, int) and sft_seed >= 0
    trainer = (sft_seed if sft_seed in seeds else seeds[0]) if shared else None
    own_sft = waits_for_sft is None
    if own_sft:
        def waits_for_sft(seed, finished):
            return trainer is None or seed == trainer or _sft_ready(sft_folder, sft_seed)
    first, rest = [], []
    for seed in seeds:
        def ready(finished, seed=seed):
            return set(needs) <= finished and waits_for_sft(seed, finished)
        task = Task(f"{name} seed {seed}", fn, (*args, seed), ready)
        (first if own_sft and (trainer is None or seed == trainer) else rest).append(task)
    parts = {t.name for t in first + rest} | set(needs)
    return first, rest, Task(name, fn, (*args, None), lambda finished: parts <= finished)


def run_all(profile: str = "cpu", overrides: dict | None = None, log=print, jobs: int | None = None,
            seed_parts: bool | None = None) -> dict[str, float]:
    """What `make figures` runs: the data notebooks (01, 02); then, on `jobs` processes (the
    profile's `jobs`, default 1), the training notebooks (03, 03b) and every sweep setting;
    then the analysis notebooks (so they draw the sweeps too). Returns wall seconds per part,
    also merged into <run_dir>/pipeline_timings.json, with `parallel` the wall time of the
    parallel stage.

    With `seed_parts` (the profile's, default off) and more than one process, notebook 03 and
    each sweep setting run one task per seed (`seed_part_tasks`): the units are independent,
    and one notebook training every seed in turn was the longest path. Each part and each
    whole notebook costs a kernel start and imports (~20 s), more than the smoke profile's
    units. A sweep that keeps SFT starts from the main run's checkpoint, once it is finished;
    a sweep on a notebook-01 key builds its episodes first. Unsplit notebooks (03b) start
    first, then the tasks others wait for."""
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
    sft_seed = _parameter(params, "sft_seed", main)
    seeds = _parameter(params, "seeds", main) or []
    split = jobs > 1 and bool(params.get("seed_parts", False) if seed_parts is None else seed_parts)
    # started in this order when ready (run_tasks): whole notebooks such as 03b first, the longest
    # single tasks, so they do not end the stage alone; then what others wait for (SFTs, episodes)
    others, gates, parts, wholes = [], [], [], []
    for nb in training:
        args = (profile, overrides, [nb], print, False)
        if nb is main and split and len(seeds) > 1:
            first, rest, whole = seed_part_tasks(nb.name, run_pipeline, args, seeds, sft_seed, run_dir)
            gates, parts, wholes = gates + first, parts + rest, wholes + [whole]
        else:
            others.append(Task(nb.name, run_pipeline, args))
    for key, values in params.get("sweeps", {}).items():
        own_episodes = len(sweep_notebooks(key)) > 1
        shares_sft = key not in SFT_FIELDS and not own_episodes
        for value in values:
            name = f"sweep {key}={value}"
            sweep = resolve_profile(profile, sweep_parameters(profile, overrides, key, value))
            sweep_seeds = _parameter(sweep, "seeds", main) or []
            needs = ()
            if own_episodes and split:
                gates.append(Task(f"{name} data", run_sweep, (profile, overrides, key, value, print, ("01",))))
                needs = (gates[-1].name,)
            if shares_sft:  # starts from the main run's SFT checkpoints: wait for them
                def waits(seed, finished, per_seed=not (isinstance(sft_seed, int) and sft_seed >= 0)):
                    return main_name in finished or _sft_ready(run_dir, seed if per_seed else sft_seed)
            else:
                waits = None
            if split and len(sweep_seeds) > 1:
                first, rest, whole = seed_part_tasks(
                    name, run_sweep, (profile, overrides, key, value, print, ("03",)), sweep_seeds,
                    _parameter(sweep, "sft_seed", main), Path(sweep["run_dir"]), needs, waits)
                gates, parts, wholes = gates + first, parts + rest, wholes + [whole]
            else:
                task = Task(name, run_sweep, (profile, overrides, key, value, print, ("03",) if needs else None))
                if waits or needs:
                    task.ready = lambda finished, needs=needs, waits=waits: (
                        set(needs) <= finished and (waits is None or waits(None, finished)))
                others.append(task)
    tasks = others + gates + parts + wholes
    start = time.perf_counter()
    results = run_tasks(tasks, jobs, log)
    parallel = round(time.perf_counter() - start, 1)
    for name, value in results.items():  # a notebook's (or part's) time, or a sweep task's total
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
    parser.add_argument("--seed-parts", action=argparse.BooleanOptionalAction, default=None,
                        help="with --jobs > 1, train notebook 03's and each sweep's seeds as separate tasks "
                        "(default: the profile's seed_parts)")
    args = parser.parse_args(argv)
    overrides = {k: parse_override(v) for k, v in args.p}
    try:
        if args.only:
            run_pipeline(args.profile, overrides,
                         [nb for nb in list_notebooks() if nb.name.startswith(tuple(args.only))])
        else:
            check_overrides(overrides, list_notebooks())
            run_all(args.profile, overrides, jobs=args.jobs, seed_parts=args.seed_parts)
    except ValueError as err:
        print(f"[pipeline] error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
