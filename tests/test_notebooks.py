"""The notebooks run top to bottom (small settings) and are committed without outputs."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
QUICKSTART = NOTEBOOKS / "01_quickstart.ipynb"
MOVIELENS = NOTEBOOKS / "02_movielens_100k.ipynb"


@pytest.mark.parametrize("path", [QUICKSTART, MOVIELENS], ids=lambda p: p.name)
def test_committed_notebooks_are_valid_and_stripped(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, (
            f"{path.name} has stored outputs; strip them before committing"
        )
    assert "BPMF_NOTEBOOK_QUICK" in "".join(cell.source for cell in code)


def _execute(path, tmp_path, monkeypatch, extra_env=None):
    from nbclient import NotebookClient

    monkeypatch.setenv("BPMF_NOTEBOOK_QUICK", "1")
    # The inline backend turns plt.show() into PNG outputs (conftest sets Agg for tests).
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for key, value in (extra_env or {}).items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    return notebook


def _outputs_text(notebook):
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


def _images(notebook):
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom(tmp_path, monkeypatch):
    notebook = _execute(QUICKSTART, tmp_path, monkeypatch)
    text = _outputs_text(notebook)
    assert "BPMF test RMSE" in text and "coverage of the 90% intervals" in text
    assert _images(notebook) >= 6  # trace, rank, correlation, predictive, RMSE, calibration


@pytest.mark.slow
@pytest.mark.movielens
def test_movielens_notebook_runs_top_to_bottom(movielens_home, tmp_path, monkeypatch):
    notebook = _execute(MOVIELENS, tmp_path, monkeypatch, {"BPMF_DATA": str(movielens_home)})
    assert "rmse_mean" in _outputs_text(notebook)
    assert _images(notebook) >= 5
