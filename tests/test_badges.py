"""Colab badges and the notebooks' REPOSITORY line, on copies of the real files."""

import shutil

import nbformat
import pytest

from fgrpo_nb import badges
from fgrpo_nb.pipeline import NOTEBOOK_DIR, REPO_ROOT, list_notebooks


@pytest.fixture
def project(tmp_path):
    shutil.copytree(NOTEBOOK_DIR, tmp_path / "notebooks")
    shutil.copy(REPO_ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def test_every_notebook_has_one_unset_repository_line():
    for nb in list_notebooks():
        setup = [c.source for c in nbformat.read(nb, 4).cells if 'REPOSITORY = ""' in c.source]
        assert len(setup) == 1, nb.name  # committed unset: the README says how to set it


def test_publish_writes_badges_and_repository(project):
    readme = project / "README.md"
    before = readme.read_text()
    notebooks = badges.publish("someone/fgrpo-notebooks", readme=readme, notebook_dir=project / "notebooks")
    text = readme.read_text()
    for nb in notebooks:
        assert (f"https://colab.research.google.com/github/someone/fgrpo-notebooks/blob/main/notebooks/{nb.name}"
                in text)
        sources = [c.source for c in nbformat.read(nb, 4).cells]
        assert sum('REPOSITORY = "someone/fgrpo-notebooks"' in s for s in sources) == 1
    # only the marked block changed, and a second run gives the same file
    assert text.split(badges.START)[0] == before.split(badges.START)[0]
    assert text.split(badges.END)[1] == before.split(badges.END)[1]
    badges.publish("someone/fgrpo-notebooks", readme=readme, notebook_dir=project / "notebooks")
    assert readme.read_text() == text


@pytest.mark.parametrize("bad", ["https://github.com/a/b", "a/b.git", "nobody", "a/b/c", ""])
def test_bad_repository_names_the_expected_form(bad, project):
    with pytest.raises(ValueError, match="owner/name"):
        badges.publish(bad, readme=project / "README.md", notebook_dir=project / "notebooks")
    assert badges.main([bad]) == 2  # fails before writing anything
