"""One way the tests execute a notebook: papermill, the `python3` kernel of .venv, the
repository root as working directory (as `fgrpo_nb.pipeline` runs them)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_notebook(name: str, out, **parameters) -> Path:
    """Execute notebooks/<name> with `parameters` into `out`; raises PapermillExecutionError."""
    import papermill

    papermill.execute_notebook(str(ROOT / "notebooks" / name), str(out), parameters=parameters,
                               kernel_name="python3", cwd=str(ROOT), progress_bar=False)
    return Path(out)
