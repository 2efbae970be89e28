"""Invoke tasks (tasks.py): every documented task is listed, and the thin ones run the right command."""

import contextlib
import importlib.util
import io
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from invoke import MockContext, Program, Result

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["reproduce", "tune", "lr-find", "test", "lint", "bench.aggregate", "bench.crops", "bench.pipeline",
         "bench.gpu", "bench.scale", "data.demo", "data.download", "kernels.build", "kernels.check", "kernels.push",
         "kernels.status", "kernels.pull", "submission.submit", "weights.save", "docker.base", "docker.build",
         "docker.run", "docker.lock", "kaggle.sandbox"]


def _invoke(*args: str) -> subprocess.CompletedProcess:
    """`invoke ARGS` in the repository root, by invoke's own `Program` in this process (the program `python -m
    invoke` runs, without a new interpreter importing iwc and torch each time): its exit code, stdout, stderr."""
    out, err, code, path = io.StringIO(), io.StringIO(), 0, list(sys.path)
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            Program(binary_names=["invoke"]).run(["invoke", *args])
        except SystemExit as e:
            code = e.code or 0
        finally:  # its loader put the root on sys.path and tasks.py in sys.modules: leave neither behind
            sys.path[:] = path
            sys.modules.pop("tasks", None)
    return subprocess.CompletedProcess(["invoke", *args], code, out.getvalue(), err.getvalue())


def _load_tasks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("iwc_tasks", ROOT / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands(task, *args, **kwargs) -> list[str]:
    """The shell commands a task would run, recorded instead of run."""
    c = MockContext(run=Result(), repeat=True)
    task(c, *args, **kwargs)
    return [call.args[0] for call in c.run.call_args_list]


def test_list_shows_every_documented_task_with_its_help():
    done = subprocess.run([sys.executable, "-m", "invoke", "--list"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)  # the command itself, once: the other tests call its program in process
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ") and line.strip()
              and not line.startswith("    ")}
    assert sorted(listed) == sorted(TASKS)
    assert all(len(line.split()) > 1 for line in listed.values())  # each task has a help line


def test_dry_data_demo_echoes_the_command_without_running_it(tmp_path):
    out = tmp_path / "demo-out"
    done = _invoke("--dry", "data.demo", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"-m iwc.host.cli demo-data {out}\x1b" in done.stdout  # nothing more: iwc's own defaults apply
    assert not out.exists()


def test_data_demo_without_out_writes_where_reproduce_looks():
    assert _commands(_load_tasks().data_demo, seed="3", scale="small", quirks=True) == [
        f"{sys.executable} -m iwc.host.cli demo-data data/demo/small-seed3-quirks --seed 3 --scale small --quirks"]
    assert _commands(_load_tasks().data_demo) == [f"{sys.executable} -m iwc.host.cli demo-data data/demo/medium-seed0"]


FORWARDED = [("reproduce", ["reproduce"]), ("submission_submit", ["kaggle", "submit"]),
             ("kernels_status", ["kaggle", "status"]), ("docker_run", ["docker-run"]), ("tune", ["tune"]),
             ("lr_find", ["lr-find"])]


@pytest.mark.parametrize(("name", "command"), FORWARDED)
def test_forwarding_tasks_take_every_option_and_its_help_from_iwc(name, command):
    from iwc.host.cli import build_parser

    parser = build_parser()
    for word in command:
        parser = next(a for a in parser._actions if a.choices and word in a.choices).choices[word]
    declared = {a.dest: a.help for a in parser._actions if a.dest != "help"}
    arguments = {a.attr_name or a.name: a.help for a in getattr(_load_tasks(), name).get_arguments()}
    assert set(arguments) == set(declared) - {"name"} | ({"stage"} if name == "docker_run" else set())
    for dest, text in declared.items():
        assert (text or "") in arguments["stage" if dest == "name" else dest]


def test_readme_forms_of_the_kaggle_tasks_still_parse():
    done = _invoke("--dry", "kernels.status", "--kernel", "you/iwc-crop-model", "--version", "3", "--wait")
    assert done.returncode == 0, done.stderr
    assert "-m iwc.host.cli kaggle status you/iwc-crop-model --version 3 --wait" in done.stdout
    done = _invoke("--dry", "kernels.push", "--folder", "a b", "--folder", "c")
    assert "-m iwc.host.cli kaggle push 'a b' c" in done.stdout
    done = _invoke("--dry", "submission.submit", "subs/x", "--message", "m", "--resubmit")
    assert "-m iwc.host.cli kaggle submit subs/x --message m --resubmit" in done.stdout


def test_tune_forwards_its_run_and_options_to_iwc_tune():
    done = _invoke("--dry", "tune", "my run", "--write", "best.toml", "--step", "0.2")
    assert done.returncode == 0, done.stderr
    assert "-m iwc.host.cli tune 'my run' --data" not in done.stdout
    assert "-m iwc.host.cli tune 'my run' --write best.toml --step 0.2" in done.stdout


def test_lr_find_forwards_its_options_to_iwc_lr_find():
    done = _invoke("--dry", "lr-find", "--model", "full", "--data", "d", "--batches", "50", "--set", "seed=1")
    assert done.returncode == 0, done.stderr
    assert "-m iwc.host.cli lr-find --model full --data d --batches 50 --set seed=1" in done.stdout


def test_collection_holds_exactly_the_documented_tasks():
    assert sorted(_load_tasks().ns.task_names) == sorted(TASKS)


@pytest.mark.parametrize("name", ["aggregate", "crops", "pipeline", "gpu", "scale"])
def test_bench_tasks_run_their_script_into_results(name):
    tasks = _load_tasks()
    (command,) = _commands(getattr(tasks, f"bench_{name}"))
    assert command == f"{sys.executable} benchmarks/{name}.py --out benchmarks/results/{name}.json"
    assert (ROOT / "benchmarks" / f"{name}.py").is_file()


def test_bench_scale_passes_a_smaller_scale():
    assert _commands(_load_tasks().bench_scale, scale="small") == [
        f"{sys.executable} benchmarks/scale.py --out benchmarks/results/scale.json --scale small"]


def test_data_demo_and_test_pass_their_options():
    tasks = _load_tasks()
    assert _commands(tasks.data_demo, out="x/y", seed=3, scale="small") == [
        f"{sys.executable} -m iwc.host.cli demo-data x/y --seed 3 --scale small"]
    assert _commands(tasks.test, k="cli") == [f"{sys.executable} -m pytest -k 'cli'"]
    assert _commands(tasks.test) == [f"{sys.executable} -m pytest"]


def test_reproduce_forwards_its_options_to_iwc_reproduce():
    tasks = _load_tasks()
    assert _commands(tasks.reproduce, demo=True, set=["blend.full_weight=0.5", "seed=3"], seed=0, data_seed=7,
                     run="x y") == [
        f"{sys.executable} -m iwc.host.cli reproduce --demo --data-seed 7 --seed 0 --run 'x y' "
        "--set blend.full_weight=0.5 --set seed=3"]


def test_weights_save_forwards_to_iwc_weights_save():
    assert _commands(_load_tasks().weights_save, out="w/r50.safetensors") == [
        f"{sys.executable} -m iwc.host.cli weights save --out w/r50.safetensors"]


@pytest.mark.parametrize("code", [1, 2, 130])
def test_a_failing_iwc_command_exits_the_task_with_its_code(code):
    from invoke import Exit

    c = MockContext(run=Result(exited=code), repeat=True)
    with pytest.raises(Exit) as e:
        _load_tasks().reproduce(c, demo=True)
    assert e.value.code == code


def test_invoke_passes_iwc_exit_code_and_one_line_without_a_traceback():
    done = _invoke("reproduce", "--recipe", "no-such-recipe")
    assert done.returncode == 2
    assert done.stderr.count("iwc: error:") == 1
    assert "neither a named recipe" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_kaggle_sandbox_task_runs_the_sandbox_with_its_options():
    tasks = _load_tasks()
    assert _commands(tasks.kaggle_sandbox, data="d", port=8123, fault=["rate_limit:2,retry_after=3", "push_error"]) == [
        f"{sys.executable} -m iwc.host.sandbox --data d --port 8123 --fault rate_limit:2,retry_after=3 "
        "--fault push_error"]
