"""Runs every notebook in notebooks/ and saves it with its outputs (``make notebooks``).

The notebooks run on the fake model and the fake server: ``OPENAI_API_KEY`` is
removed from the kernel's environment, and ``PYTHONPATH`` points at this checkout,
so the saved outputs show this code, not an installed copy. Execution times are
dropped from the saved cells so that re-running changes only what the run showed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def execute(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def main(paths: list[str]) -> None:
    os.environ.pop("OPENAI_API_KEY", None)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    for path in [Path(p) for p in paths] or sorted(HERE.glob("*.ipynb")):
        print(f"executing {path.name}")
        execute(path)


if __name__ == "__main__":
    main(sys.argv[1:])
