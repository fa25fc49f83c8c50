"""Point the notebooks at the project's public repository, for Colab.

    python -m fgrpo_nb.badges OWNER/NAME [--branch main]

Writes an "Open in Colab" badge per notebook into the README (between the
`colab-badges` markers) and sets `REPOSITORY` in each notebook's setup cell, which Colab
uses to clone the project before installing it. Why a command and not fixed links: the
public path is only known once the project is published; until then the README says so
and a notebook opened outside a clone stops with a message instead of a broken clone.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

from .pipeline import NOTEBOOK_DIR, REPO_ROOT, list_notebooks

START, END = "<!-- colab-badges:start -->", "<!-- colab-badges:end -->"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
_REPOSITORY_LINE = re.compile(r'^REPOSITORY = "[^"\n]*"', re.MULTILINE)
_OWNER_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")


def check_repository(repository: str) -> str:
    if not _OWNER_NAME.fullmatch(repository) or repository.endswith(".git"):
        raise ValueError(f"repository must look like owner/name (no URL, no .git); got {repository!r}")
    return repository


def badge_block(repository: str, notebooks: list[Path], branch: str = "main") -> str:
    """The README lines between the markers: one badge per notebook."""
    lines = [START, "| notebook | Colab |", "|---|---|"]
    for nb in notebooks:
        url = f"https://colab.research.google.com/github/{repository}/blob/{branch}/notebooks/{nb.name}"
        lines.append(f"| `{nb.name}` | [![Open In Colab]({BADGE_IMAGE})]({url}) |")
    return "\n".join([*lines, END])


def set_readme_badges(readme: Path, block: str) -> None:
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} markers to write the badges between")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(head + block + tail, encoding="utf-8")


def set_notebook_repository(path: Path, repository: str) -> None:
    """Set `REPOSITORY = "owner/name"` in the notebook's setup cell (the only such line)."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and _REPOSITORY_LINE.search(c.source)]
    if len(cells) != 1:
        raise ValueError(f"{path.name}: expected one setup cell with a REPOSITORY line, found {len(cells)}")
    cells[0].source = _REPOSITORY_LINE.sub(f'REPOSITORY = "{repository}"', cells[0].source, count=1)
    nbformat.write(nb, path)


def publish(repository: str, branch: str = "main", readme: Path = REPO_ROOT / "README.md",
            notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    check_repository(repository)
    notebooks = list_notebooks(notebook_dir)
    for nb in notebooks:
        set_notebook_repository(nb, repository)
    set_readme_badges(readme, badge_block(repository, notebooks, branch))
    return notebooks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", help="owner/name on GitHub")
    parser.add_argument("--branch", default="main")
    args = parser.parse_args(argv)
    try:
        notebooks = publish(args.repository, args.branch)
    except ValueError as err:
        print(f"[badges] error: {err}", file=sys.stderr)
        return 2
    print(f"[badges] {len(notebooks)} notebooks point at {args.repository}; README badges written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
