"""examples/quickstart.ipynb runs from top to bottom in a real kernel: a JAX MLP trained in memory,
pruned, checked (the card renders), verified by the checker alone, and a scale flow plotted."""

import pytest

from .conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_quickstart_notebook_executes(tmp_path):
    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(html) == 1 and "certify-card" in html[0] and "CERTIFIED" in html[0]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "CERTIFIED 0" in text and "keep16" in text and "keep4" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # flow.plot()
    assert "Verdict.CERTIFIED" in str([o["data"]["text/plain"] for o in outputs if "text/plain" in o.get("data", {})])
    assert list((tmp_path / "proofs").glob("*.npz")) and (tmp_path / "proofs" / "quickstart.cert.json").is_file()
