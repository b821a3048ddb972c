"""Ray's workers are kept between runs only inside a Jupyter kernel: that is judged from the running shell,
not from which modules happen to be imported (a test run or a script may import ipykernel)."""

import os
import subprocess
import sys
from pathlib import Path

from scoring_lib.engines import ray_reuse

ROOT = Path(__file__).resolve().parents[2]


def test_importing_ipykernel_does_not_make_a_process_a_kernel(monkeypatch):
    import IPython  # noqa: F401
    import ipykernel  # noqa: F401

    monkeypatch.setattr(ray_reuse.State, "reuse", None)
    assert "ipykernel" in sys.modules and "IPython" in sys.modules
    assert ray_reuse.reusing() is False


def test_a_jupyter_kernel_is_recognised():
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        said = []
        reply = kc.execute_interactive("from scoring_lib.engines.ray_reuse import reusing; print(reusing())",
                                       timeout=120, output_hook=lambda m: said.append(m["content"].get("text", "")))
        assert reply["content"]["status"] == "ok", reply["content"]
        assert "".join(said).strip() == "True"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
