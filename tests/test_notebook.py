"""examples/quickstart.ipynb runs top to bottom (its outputs are not committed)."""

import os

import nbformat
from conftest import REPO
from nbclient import NotebookClient

NOTEBOOK = os.path.join(REPO, "examples", "quickstart.ipynb")


def test_the_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") and not cell.get("execution_count")
               for cell in notebook.cells if cell.cell_type == "code")


def test_the_quickstart_notebook_runs(data_dir, cache_dir):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    environment = {"VMA_DATA_DIR": os.path.abspath(data_dir), "VMA_CACHE_DIR": os.path.abspath(cache_dir)}
    previous = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)  # the kernel inherits this process's environment
    try:
        NotebookClient(notebook, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "with its character in memory:" in printed
