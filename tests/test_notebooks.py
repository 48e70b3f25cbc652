"""Every notebook in notebooks/ runs top to bottom with no API key, and is committed
with the outputs a reader should see (``make notebooks`` writes them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _outputs(nb: Any) -> list[Any]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # the kernel inherits this env
    # ... and runs this checkout, not whatever copy of the package is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    errors = [out for out in _outputs(nb) if out.get("output_type") == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_shows_its_counts_and_pictures(path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    outputs = _outputs(nbformat.read(path, as_version=4))
    assert not [out for out in outputs if out.get("output_type") == "error"]
    texts = "".join(out.get("text", "") for out in outputs if out.get("output_type") == "stream")
    htmls = [out["data"]["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    pngs = [out for out in outputs if "image/png" in out.get("data", {})]
    assert " ok, " in texts and " failed in " in texts  # the printed summary
    assert "100%" in texts  # the bar's final line, as text
    assert any("<b>BatchResult</b>" in h and "data:image/png;base64," in h for h in htmls)
    assert pngs  # results.plot()
    if path.name == "quickstart.ipynb":  # cost live on the bar, the estimate, the cap
        assert "$=" in texts and " not run" in texts
        assert any("cost estimate" in h for h in htmls)
    if path.name == "image_captioning.ipynb":
        assert any("data:image/jpeg;base64," in h and "failed" in h for h in htmls)  # show()
