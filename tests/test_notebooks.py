"""Every notebook runs top to bottom through papermill with tiny parameters, with its working folder
at notebooks/ (as JupyterLab starts kernels) and at the repo root (as papermill and the CLI do),
naming files relative to the project root both ways; no error, warning or stderr output; git
holds them clean."""

import json
import re
import socket
import subprocess
from urllib.parse import urlparse

import nbformat
import papermill as pm
import pytest

from scoring_lib.records import read_records

from conftest import REPO

NOTEBOOKS = REPO / "notebooks"
TINY_SERVICE = {"latency": 4.15, "capacity": 200, "time_scale": 0.005}
WHERE = {"notebooks": NOTEBOOKS, "root": REPO}


def problems(nb) -> list[str]:
    """Outputs a person would see as red or as a warning: errors, stderr streams, warnings."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.output_type == "error":
                out.append(f"error: {o.ename}: {o.evalue}")
            elif o.output_type == "stream" and o.name == "stderr":
                out.append(f"stderr: {o.text[:300]}")
            else:
                text = o.get("text", "") if o.output_type == "stream" else (o.get("data") or {}).get("text/plain", "")
                if re.search(r"Warning\b|WARNING", str(text)):
                    out.append(f"warning: {str(text)[:300]}")
    return out


def execute(name, cwd, save_to, **parameters):
    out = save_to / f"{name}.out.ipynb"
    pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters, kernel_name="python3",
                        progress_bar=False, cwd=str(cwd))
    nb = nbformat.read(out, as_version=4)
    assert problems(nb) == [], name
    return nb


def tracked_notebooks():
    listed = subprocess.run(["git", "ls-files", "notebooks/*.ipynb"], cwd=REPO, capture_output=True, text=True)
    names = listed.stdout.split() if listed.returncode == 0 and listed.stdout.strip() else []
    return [REPO / n for n in names] or sorted(NOTEBOOKS.glob("*.ipynb"))


def test_notebooks_are_committed_without_outputs_and_start_with_tagged_parameters():
    paths = tracked_notebooks()
    assert {p.name for p in paths} >= {"explore.ipynb", "run.ipynb", "sweep.ipynb", "report.ipynb"}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), path.name
        for cell in code:
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
        assert "api_key =" not in "".join(c.source for c in code), path.name


def test_every_parameter_has_a_type_and_a_meaning_for_papermill_help():
    for path in tracked_notebooks():
        params = pm.inspect_notebook(str(path))
        assert params, path.name
        for name, p in params.items():
            assert p["inferred_type_name"] not in ("None", ""), (path.name, name)
            assert p["help"], (path.name, name)


@pytest.mark.slow
@pytest.mark.parametrize("where", WHERE)
def test_run_notebook_records_its_runs_and_never_sees_the_key(tmp_path, monkeypatch, where):
    key = "nb-secret-4242"
    monkeypatch.setenv("SCORING_API_KEY", key)
    nb = execute("run", WHERE[where], tmp_path, input="data/sample.txt", lines=20, repeats=2, warmup=1,
                 max_concurrent_tasks=8, service=TINY_SERVICE, records_dir=str(tmp_path / "runs"))
    records = read_records(tmp_path / "runs")
    assert len(records) == 3 and sum(r["extra"]["warmup"] for r in records) == 1
    assert all(r["ok"] == 20 for r in records)
    assert all(r["input"].endswith("sample-first20.txt") for r in records)
    text = json.dumps(nb)
    assert "scoring_seconds" in text  # the table of runs is shown
    for path in [tmp_path / "run.out.ipynb", *(tmp_path / "runs").glob("*.json")]:
        assert key not in path.read_text(), path


@pytest.mark.slow
@pytest.mark.parametrize("where", WHERE)
def test_explore_notebook_probes_and_shows_rows(tmp_path, where):
    nb = execute("explore", WHERE[where], tmp_path, input="data/sample.txt", sample_lines=10, probe_samples=4,
                 service=TINY_SERVICE)
    text = json.dumps(nb)
    assert "input: data/sample.txt" in text
    assert "deterministic: yes" in text and "batch bodies: refused" in text
    assert "image/png" in text  # the latency histogram
    assert "10 lines: 10 ok" in text


@pytest.mark.slow
@pytest.mark.parametrize("where", WHERE)
def test_sweep_and_report_notebooks(tmp_path, where):
    execute("sweep", WHERE[where], tmp_path, grid="notebooks/grids/tiny.yaml", records_dir=str(tmp_path / "runs"),
            notebooks_dir=str(tmp_path / "nb"))
    assert len(read_records(tmp_path / "runs")) == 2
    nb = execute("report", WHERE[where], tmp_path, runs_dir=str(tmp_path / "runs"), out_dir=str(tmp_path / "report"))
    assert (tmp_path / "report" / "wall_vs_concurrency.png").exists()
    assert (tmp_path / "report" / "report.html").exists()
    text = json.dumps(nb)
    assert text.count("image/png") >= 5 and "astest setting" in text  # named, or "No single fastest setting"


def _refused(url: str) -> bool:
    u = urlparse(url)
    try:
        socket.create_connection((u.hostname, u.port), timeout=2).close()
    except OSError:
        return True
    return False


@pytest.mark.slow
def test_a_failing_cell_stops_the_notebooks_service_while_the_kernel_lives(tmp_path):
    """Run All in JupyterLab stops at the first failing cell and the kernel stays up: the simulated
    service the notebook started must not outlive that failure."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(NOTEBOOKS / "explore.ipynb", as_version=4)
    nb.cells[0].source += f"\ninput = 'data/no-such-file.txt'\nservice = {TINY_SERVICE!r}\nprobe_samples = 3\n"
    client = NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    with client.setup_kernel():
        url = None
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as exc:
                assert "no-such-file" in str(exc) or "not found" in str(exc).lower()
                # shown as the CLI shows it: one line, not a traceback through the library
                shown = [o for o in cell.outputs if o.output_type == "error"][0]["traceback"]
                assert len(shown) == 1 and "no-such-file" in shown[0], shown
                break
            for o in cell.outputs:
                found = re.search(r"service: (http://127\.0\.0\.1:\d+/\S*)", o.get("text", ""))
                url = url or (found and found.group(1))
        else:
            pytest.fail("no cell failed")
        assert url and _refused(url), url  # stopped, though the kernel is still running:
        check = nbformat.v4.new_code_cell("print('service exit code:', service_process.proc.poll())")
        nb.cells.append(check)
        client.execute_cell(check, len(nb.cells) - 1)
        assert "service exit code: None" not in check.outputs[0]["text"]


@pytest.mark.slow
def test_git_status_stays_clean_after_make_run_and_every_notebook_run_and_saved(tmp_path, monkeypatch):
    """A fresh clone: the main job's commands (with the tiny grid), then every notebook run with its
    kernel in notebooks/ and saved through Jupyter's own contents manager with the hook `make lab` sets;
    then a notebook saved with its outputs by a JupyterLab without the hook is staged: the nbstripout
    filter stages it as committed. `git status` shows nothing changed throughout."""
    from jupyter_server.services.contents.filemanager import FileContentsManager
    from nbclient import NotebookClient

    from conftest import cli, git, make_clone
    from scoring_lib.notebook import save_hook

    clone = make_clone(tmp_path)
    monkeypatch.setenv("SCORING_WORKBENCH_ROOT", str(clone))  # kernels and the CLI work in the clone
    assert cli("sweep", "notebooks/grids/tiny.yaml", cwd=clone, timeout=300).returncode == 0
    made = cli("report", "--sweep", "notebooks/grids/tiny.yaml", cwd=clone)
    assert made.returncode == 0 and "results/report/report.md" in made.stdout
    assert git("status", "--porcelain", cwd=clone) == ""

    manager = FileContentsManager(root_dir=str(clone))
    manager.register_pre_save_hook(save_hook)
    executed = {}
    for name in ("explore", "run", "sweep", "report"):
        nb = nbformat.read(clone / "notebooks" / f"{name}.ipynb", as_version=4)
        NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(clone / "notebooks")}}).execute()
        assert problems(nb) == [], name
        executed[name] = nb
        manager.save({"type": "notebook", "format": "json", "content": nb}, f"notebooks/{name}.ipynb")
        assert git("status", "--porcelain", cwd=clone) == "", name
    saved = nbformat.read(clone / "results" / "notebooks" / "saved" / "report.ipynb", as_version=4)
    assert sum("image/png" in o.get("data", {}) for c in saved.cells for o in c.get("outputs", [])) >= 5

    # a JupyterLab without the hook saves the notebook with its outputs: staging it stages it as committed
    nbformat.write(executed["explore"], clone / "notebooks" / "explore.ipynb")
    assert "outputs\": [\n" in (clone / "notebooks" / "explore.ipynb").read_text()
    git("add", "-A", cwd=clone)
    assert git("status", "--porcelain", cwd=clone) == ""


@pytest.mark.slow
def test_report_notebook_takes_a_profile_by_name_from_the_project_root(tmp_path, monkeypatch):
    """`profile` as `report --profile` has it: the profile's capacity tests the seed's hypothesis. A bare
    name is profiles/NAME.yaml under the project root, whatever folder the kernel runs in."""
    from scoring_lib.service import Known, ServiceProfile

    root = tmp_path / "root"
    ServiceProfile(name="seedcap", latency=Known(4.15, "configured"), capacity=Known(200, "probed")).save(
        root / "profiles" / "seedcap.yaml")
    monkeypatch.setenv("SCORING_WORKBENCH_ROOT", str(root))  # the kernel's project root
    nb = execute("report", NOTEBOOKS, tmp_path, runs_dir=str(REPO / "results/reference/runs"),
                 sweeps=["reference"], out_dir=str(tmp_path / "report"), profile="seedcap")
    text = json.dumps(nb)
    assert "The capacity part, tested on a profile:** seedcap has a probed capacity of 200" in text
    built = next(c for c in nb.cells if "build_report(" in c.source)
    seed = [o["data"]["text/html"] for o in built.outputs if "text/html" in o.get("data", {})]
    assert len(seed) == 1 and "\u2014" in seed[0]  # the seed table: a dash where a figure does not exist
    assert not re.search(r">\s*(nan|NaN|None)\s*<", seed[0])
