"""A whole process pays only for what it uses: the package imports its parts on first use, and a run
that shows no progress bar never loads tqdm."""

from __future__ import annotations

import subprocess
import sys

import scoring_lib


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout


def test_importing_the_package_loads_neither_the_client_nor_the_simulator():
    loaded = _run("import sys, scoring_lib, scoring_lib.cli; "
                  "print(sorted(m for m in ('aiohttp', 'scoring_lib.pipeline', 'scoring_lib.server', 'psutil', "
                  "'tqdm') if m in sys.modules))")
    assert loaded.strip() == "[]"


def test_public_names_still_resolve_and_probe_is_the_function():
    import scoring_lib.probe  # the submodule of the same name, imported first, must not take its place

    from scoring_lib import ClientConfig, RunConfig, ServerConfig, SimulatedService, probe, score_file

    assert callable(probe) and probe.__name__ == "probe" and scoring_lib.probe is probe
    assert {ClientConfig, RunConfig, ServerConfig, SimulatedService, score_file}
    assert set(scoring_lib.__all__) <= set(dir(scoring_lib))


def test_a_run_without_a_progress_bar_does_not_load_tqdm(tmp_path):
    (tmp_path / "in.txt").write_text("a\nb\n", encoding="utf-8")
    loaded = _run(f"""
import sys
from pathlib import Path
from scoring_lib import ClientConfig, RunConfig, ServerConfig, SimulatedService, score_file
with SimulatedService(ServerConfig(latency=0)) as svc:
    score_file(RunConfig(input=Path({str(tmp_path / 'in.txt')!r}), client=ClientConfig(url=svc.url), cache=None,
                         records_dir=None, progress=False, output=Path({str(tmp_path / 'out.jsonl')!r})))
print('tqdm' in sys.modules)
""")
    assert loaded.strip() == "False"


def test_a_run_against_an_external_url_does_not_load_the_simulator(service, tmp_path):
    (tmp_path / "in.txt").write_text("a\nb\n", encoding="utf-8")
    loaded = _run(f"""
import sys
from scoring_lib.cli import main
code = main(["score", {str(tmp_path / 'in.txt')!r}, "--url", {service.url!r}, "--no-cache", "--no-progress",
             "--no-record", "--output", {str(tmp_path / 'out.jsonl')!r}])
print(code, sorted(m for m in ('aiohttp.web', 'scoring_lib.server', 'scoring_lib.sim') if m in sys.modules))
""")
    assert loaded.strip().splitlines()[-1] == "0 []"


def test_an_external_url_is_described_as_the_simulator_would_describe_it(tmp_path):
    from argparse import Namespace

    from scoring_lib.cli_service import Service, service_url
    from scoring_lib.redact import safe_url
    from scoring_lib.server import service_info
    from scoring_lib.service import ServiceProfile

    profile = ServiceProfile.from_server_config(scoring_lib.ServerConfig(latency=0.5, capacity=7))
    for prof in (None, profile):
        svc = Service(prof, {}, "http://user:pw@127.0.0.1:9/score")
        with service_url(Namespace(), svc) as (url, info):
            assert url == svc.url and info == service_info(safe_url(svc.url), "external", profile=prof)
