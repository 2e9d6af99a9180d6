"""The Colab notebook runs top to bottom on CPU (slow: it trains and samples)."""

import os

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_demo_notebook_executes(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("STIV_NOTEBOOK_STEPS", "40")  # used only when there is no `make demo` run
    nb = nbformat.read(os.path.join(ROOT, "colabs", "stiv_demo.ipynb"), as_version=4)
    NotebookClient(
        nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": os.path.join(ROOT, "colabs")}}
    ).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "max relative difference JAX vs PyTorch" in outputs
    psnr = float(outputs.split("PSNR PyTorch vs JAX: ")[1].split(" dB")[0])  # the diffusers pipeline
    assert psnr >= 40, psnr
    html = [o for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert html and "image/gif;base64" in html[0]["data"]["text/html"]  # the videos are shown inline
