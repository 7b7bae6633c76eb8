"""The sandbox that grades code: each hazard a model can write by accident fails and harms nothing."""

from pathlib import Path

import pytest

from ttscale.tasks.sandbox import Limits, run_program

FAST = Limits(wall_seconds=3.0, cpu_seconds=3)


def test_a_correct_program_passes_and_a_failing_one_fails():
    assert run_program("def f(x):\n    return x + 1\nassert f(1) == 2\n", FAST).passed
    assert not run_program("assert 1 == 2\n", FAST).passed
    assert not run_program("def f(:\n", FAST).passed


def test_the_standard_library_still_works():
    program = ("from typing import List\nimport collections, hashlib, math, re\n"
               "P = collections.namedtuple('P', 'a b')\n"
               "def f(x: List[int]) -> int:\n    return sum(x)\nassert f([1, 2]) == 3 and hashlib.md5(b'a').hexdigest()\n")
    assert run_program(program, FAST).passed


@pytest.mark.parametrize("program", ["import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit\n"])
def test_exiting_before_the_tests_finish_is_a_failure(program: str):
    assert not run_program(program, FAST).passed


def test_an_infinite_loop_times_out():
    outcome = run_program("while True:\n    pass\n", Limits(wall_seconds=1.0, cpu_seconds=5))
    assert not outcome.passed and outcome.reason == "timeout"


@pytest.mark.parametrize("program", [
    "import os\nwhile True:\n    os.fork()\n",
    "import multiprocessing\nmultiprocessing.Process(target=print).start()\n",
    "import subprocess\nsubprocess.run(['true'])\n",
    "import os\nos.system('true')\n",
])
def test_forks_and_subprocesses_are_refused(program: str):
    outcome = run_program(program, FAST)
    assert not outcome.passed and "refused" in outcome.reason


def test_deleting_files_is_refused_and_they_survive(tmp_path: Path):
    victim, folder = tmp_path / "victim.txt", tmp_path / "folder"
    victim.write_text("keep me")
    folder.mkdir()
    for program in (f"import os\nos.remove({str(victim)!r})\n", f"import shutil\nshutil.rmtree({str(folder)!r})\n",
                    f"import os\nos.rename({str(victim)!r}, 'x')\n", f"open({str(victim)!r}, 'w').write('')\n"):
        assert not run_program(program, FAST).passed
    assert victim.read_text() == "keep me" and folder.is_dir()


def test_reading_or_listing_outside_the_throwaway_folder_is_refused(tmp_path: Path):
    secret = tmp_path / "ttscale.duckdb"
    secret.write_text("warehouse")
    assert not run_program(f"open({str(secret)!r}).read()\n", FAST).passed
    assert not run_program(f"import os\nos.listdir({str(tmp_path)!r})\n", FAST).passed
    assert run_program("open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n", FAST).passed


def test_sockets_are_refused():
    outcome = run_program("import socket\nsocket.create_connection(('127.0.0.1', 4200), timeout=1)\n", FAST)
    assert not outcome.passed and "socket" in outcome.reason


def test_memory_and_file_size_are_limited():
    assert not run_program("x = bytearray(8 << 30)\n", FAST).passed
    assert not run_program("open('big', 'w').write('a' * (8 << 20))\n", FAST).passed
