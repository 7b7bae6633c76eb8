import json
from pathlib import Path

import pytest

from ttscale.configs.schema import TaskConfig
from ttscale.tasks import arith
from ttscale.tasks.grading import grade, split_steps
from ttscale.tasks.problems import ProblemFileError, load_jsonl


def test_arith_is_seeded_and_splits_are_disjoint():
    task = TaskConfig(n_test=50, n_train=50)
    a, b = arith.make_split(task, "test"), arith.make_split(task, "test")
    assert [p.question for p in a] == [p.question for p in b]
    train = arith.make_split(task, "train")
    assert not {p.question for p in a} & {p.question for p in train}
    assert {p.level for p in a} == set(range(1, len(task.levels) + 1))
    other = arith.make_split(TaskConfig(seed=1, n_test=50), "test")
    assert [p.question for p in a] != [p.question for p in other]


def test_training_stream_never_yields_test_problems():
    task = TaskConfig(n_test=200)
    held_out = {arith.prompt(p.question) for p in arith.make_split(task, "test")}
    stream = arith.training_stream(task, seed=0)
    assert not any(next(stream)[0] in held_out for _ in range(2000))


def test_reference_solutions_grade_correct_and_steps_split():
    for p in arith.make_split(TaskConfig(n_test=20), "test"):
        ref = p.meta["reference_solution"]
        answer, ok = grade(p, ref)
        assert ok and answer == p.answer
        steps = split_steps(ref)
        assert len(steps) == int(p.question.split("\n\n")[-1][:2]) + 1  # one per iteration + the answer line
        assert 0 <= int(p.answer) < arith.MODULUS


def test_wrong_and_unparseable_arith_answers():
    p = arith.make_split(TaskConfig(n_test=1), "test")[0]
    wrong = str((int(p.answer) + 1) % arith.MODULUS)
    assert grade(p, f"1: x\n\nans={wrong}") == (wrong, False)
    assert grade(p, "1: 12*3+4=40\n\nanswr 40") == (None, False)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_loads_math500_rows(tmp_path: Path):
    rows = [{"problem": "What is $1+1$?", "answer": "2", "unique_id": "a/1.json", "level": 1, "subject": "Algebra"},
            {"problem": "Half of one?", "answer": "\\frac{1}{2}"}]
    problems = load_jsonl(_write(tmp_path / "m.jsonl", [json.dumps(r) for r in rows]))
    assert [p.answer for p in problems] == ["2", "\\frac{1}{2}"]
    assert problems[0].meta["id"] == "a/1.json" and problems[0].level == 1
    assert problems[0].problem_id != problems[1].problem_id


@pytest.mark.parametrize(
    "bad_line, expected",
    [("{not json", "not valid JSON"), (json.dumps({"answer": "3"}), "missing required field 'problem'"),
     (json.dumps({"problem": "x", "answer": ""}), "field 'answer'"), ("[1, 2]", "expected a JSON object"),
     (json.dumps({"problem": "x", "answer": "1", "level": "hard"}), "field 'level'")],
)
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, bad_line: str, expected: str):
    path = _write(tmp_path / "bad.jsonl", [json.dumps({"problem": "ok", "answer": "1"}), bad_line])
    with pytest.raises(ProblemFileError) as err:
        load_jsonl(path)
    assert f"{path}:2:" in str(err.value) and expected in str(err.value)


def test_missing_problem_file(tmp_path: Path):
    with pytest.raises(ProblemFileError, match="no such problem file"):
        load_jsonl(tmp_path / "absent.jsonl")


def test_non_utf8_and_empty_problem_files(tmp_path: Path):
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(json.dumps({"problem": "ok", "answer": "1"}).encode() + b"\n" +
                      '{"problem": "caf\u00e9", "answer": "2"}'.encode("latin-1").replace(b"\\u00e9", b"\xe9") + b"\n")
    with pytest.raises(ProblemFileError, match=r"latin1.jsonl:2: not UTF-8"):
        load_jsonl(latin)
    empty = _write(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(ProblemFileError, match="no problems in file"):
        load_jsonl(empty)
