"""The Ray processes the workbench starts boot without jsonschema's optional format checkers."""

import os
import subprocess
import sys

from scoring_lib.engines import ray_boot


def test_a_ray_process_imports_jsonschema_without_its_optional_format_checkers():
    code = ("import sys, jsonschema; from scoring_lib.engines.ray_boot import KEPT_OUT; "
            "print(sorted(m for m in (*KEPT_OUT, 'arrow') if m in sys.modules))")
    env = ray_boot.environ(dict(os.environ))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_every_module_kept_out_has_its_stand_in():
    for name in ray_boot.KEPT_OUT:
        assert os.path.isfile(os.path.join(ray_boot.PATH, f"{name}.py")), name
