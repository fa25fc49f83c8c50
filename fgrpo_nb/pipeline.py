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
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"

# One place for profile defaults. Keys a notebook does not declare in its parameters
# cell are not passed to it, so every notebook sees only what it understands.
_COMMON = {"run_dir": "runs/{run_name}", "figures_dir": "figures"}
PROFILES: dict[str, dict] = {
    # tiny sizes for tests and a first look: minutes, not an experiment
    "smoke": {
        "run_name": "smoke",
        "figures_dir": "runs/smoke/figures",
        "profile": "smoke",
    },
    # the default: what the committed figures come from (2-core CPU, under 45 minutes)
    "cpu": {
        "run_name": "cpu",
        "profile": "cpu",
    },
    # for users with a GPU and the hub; untested here
    "gpu": {
        "run_name": "gpu",
        "figures_dir": "runs/gpu/figures",
        "profile": "gpu",
    },
}


def list_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    return sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))


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
                 notebooks: list[Path] | None = None, log=print) -> dict[str, float]:
    """Execute the notebooks in order; return wall seconds per notebook."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebooks = list_notebooks() if notebooks is None else notebooks
    overrides = overrides or {}
    check_overrides(overrides, notebooks)
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
    (run_dir / "pipeline_timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", help=f"one of {sorted(PROFILES)}")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="override one parameter (repeatable)")
    parser.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these prefixes (e.g. 04)")
    args = parser.parse_args(argv)
    overrides = {k: parse_override(v) for k, v in args.p}
    notebooks = list_notebooks()
    if args.only:
        notebooks = [nb for nb in notebooks if nb.name.startswith(tuple(args.only))]
    try:
        run_pipeline(args.profile, overrides, notebooks)
    except ValueError as err:
        print(f"[pipeline] error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
