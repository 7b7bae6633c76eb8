"""The embedded model: tokenizer, packing with loss on solutions only, and a training run that learns."""

import json
from pathlib import Path

from mlflow.tracking import MlflowClient

import pytest
import torch

from ttscale.configs.schema import BaseModelConfig, TaskConfig
from ttscale.models.tiny import build_model, build_tokenizer, lr_factor, packed_rows, weighted_loss
from ttscale.tasks import arith


def test_tokenizer_round_trips_and_adds_bos():
    tok = build_tokenizer()
    text = "x=0042; x=x#0082 (add digits mod 10); repeat 02\n\n02: 0042#0082=0024"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.unk_token_id not in ids


def test_packed_rows_mask_prompts_and_fill_rows():
    tok = build_tokenizer()
    x, y, w = next(packed_rows(arith.training_stream(TaskConfig(), 0), tok, 96, 3, head_tokens=8, head_weight=4.0))
    assert x.shape == y.shape == (3, 96)
    flat_x, flat_y = x.flatten().tolist(), y.flatten().tolist()
    # every supervised token is a solution token: it never precedes the first blank line of its example
    first_bos = flat_x.index(tok.bos_token_id)
    prompt_end = flat_x.index(tok.convert_tokens_to_ids("\n"), first_bos) + 2
    assert all(label == -100 for label in flat_y[first_bos:prompt_end])
    assert any(label != -100 for label in flat_y[prompt_end:])
    assert all(label in (-100, tid) for label, tid in zip(flat_y, flat_x))
    # weights: 0 off solutions, head_weight on a solution's first 8 tokens, 1 after them
    flat_w = w.flatten().tolist()
    assert all((weight == 0) == (label == -100) for weight, label in zip(flat_w, flat_y))
    solution_start = next(i for i in range(first_bos, len(flat_y)) if flat_y[i] != -100)
    assert flat_w[solution_start : solution_start + 9] == [4.0] * 8 + [1.0]


def test_weighted_loss_is_transformers_loss_at_unit_weight_and_weighs_the_head():
    """At weight 1 the weighted loss is transformers' own (so the lever changes nothing until set);
    a heavier head raises it."""
    tok = build_tokenizer()
    torch.manual_seed(0)
    model = build_model(BaseModelConfig(hidden_size=32, intermediate_size=64, n_layers=1, n_heads=2, max_seq_len=96, short_seq_len=None), tok)
    rows = packed_rows(arith.training_stream(TaskConfig(), 0), tok, 96, 2, head_tokens=8, head_weight=3.0)
    x, y, w = next(rows)
    with torch.no_grad():
        own = model(input_ids=x, labels=y).loss
        unit = weighted_loss(model, x, y, (w > 0).float())
        heavy = weighted_loss(model, x, y, w)
    assert torch.allclose(own, unit, atol=1e-5)
    assert heavy > unit * 1.05


def test_schedules_warm_to_the_peak_and_end_at_five_percent():
    """cosine (the default, the models recorded so far) and wsd (measured against it in the README):
    both start at the peak and end at 5% of it; wsd holds the peak until its decay begins."""
    cosine, wsd = BaseModelConfig(), BaseModelConfig(schedule="wsd", decay_fraction=0.25)
    assert lr_factor(cosine, 0.0) == lr_factor(wsd, 0.0) == 1.0
    assert abs(lr_factor(cosine, 0.5) - 0.525) < 1e-9 and abs(lr_factor(cosine, 1.0) - 0.05) < 1e-9
    assert lr_factor(wsd, 0.75) == 1.0 and abs(lr_factor(wsd, 0.875) - 0.525) < 1e-9
    assert abs(lr_factor(wsd, 1.0) - 0.05) < 1e-9


def test_train_base_flow_learned_and_registered(trained_workdir: Path):
    marker = json.loads((trained_workdir / "models" / "base" / "ttscale_train.json").read_text())
    assert marker["version"] >= 1 and marker["n_params"] > 1000
    client = MlflowClient(tracking_uri=f"sqlite:///{trained_workdir / 'mlflow.db'}")
    losses = [m.value for m in sorted(client.get_metric_history(marker["mlflow_run_id"], "train_loss"), key=lambda m: m.step)]
    assert len(losses) >= 2 and losses[-1] < losses[0]  # it learned something in seconds
    version = client.get_model_version("ttscale-base", str(marker["version"]))
    assert version.run_id == marker["mlflow_run_id"]
    assert (trained_workdir / "models" / "base" / "model.safetensors").is_file()
    assert not (trained_workdir / "models" / "base.partial").exists()


def test_short_rows_teach_the_task_and_the_last_updates_the_long_positions(tmp_path: Path, monkeypatch):
    """All but the last `long_updates` updates use rows of short_seq_len (more of them, the same tokens per
    update); the last use max_seq_len, the positions a reviser is later served at."""
    import ttscale.models.tiny as tiny
    from ttscale.configs.schema import BaseModelConfig

    shapes: list[tuple[int, int]] = []
    original = tiny.packed_rows

    def recording(examples, tokenizer, seq_len, batch_rows, *head):
        for x, y, w in original(examples, tokenizer, seq_len, batch_rows, *head):
            shapes.append(tuple(x.shape))
            yield x, y, w

    monkeypatch.setattr(tiny, "packed_rows", recording)
    cfg = BaseModelConfig(hidden_size=32, intermediate_size=64, n_layers=1, n_heads=2, max_seq_len=96,
                          short_seq_len=32, batch_rows=1, max_updates=5, long_updates=2, warmup_updates=1)
    result = tiny.train(cfg, arith.training_stream(TaskConfig(), 0), tmp_path / "m")
    assert shapes == [(3, 32)] * 3 + [(1, 96)] * 2 and result.tokens == 5 * 96
    assert json.loads((tmp_path / "m" / "config.json").read_text())["max_position_embeddings"] == 96


def _restarting(smoke_config, **base: object):
    """The smoke preset with a base model of 5 updates (too few to learn anything) that checks itself."""
    return smoke_config.model_copy(update={"base_model": smoke_config.base_model.model_copy(
        update={"max_updates": 5, "warmup_updates": 1, "long_updates": 2, "check_problems": 4, "check_samples": 2,
                **base})})


def test_a_model_that_did_not_learn_is_trained_again_with_the_next_seed(prefect_server, smoke_config, tmp_path):
    """restarts=1: a 5-update model fails the real check (sampled on level-1 train problems), is trained
    again with seed+1, fails again and is kept; MLflow has both tries' check and cost."""
    from ttscale.flows.train_base import train_base

    config = _restarting(smoke_config, restarts=1)
    train_base(config=config, workdir=str(tmp_path))
    record = json.loads((tmp_path / "models" / "base" / "ttscale_train.json").read_text())
    assert record["tries"] == 2 and record["seed"] == config.base_model.seed + 1
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    checks = client.get_metric_history(record["mlflow_run_id"], "check_pass_at_1")
    assert sorted(m.step for m in checks) == [0, 1] and all(m.value < 0.5 for m in checks)
    assert len(client.get_metric_history(record["mlflow_run_id"], "try_train_seconds")) == 2


def test_a_try_still_on_the_plateau_at_the_gate_stops_there_and_is_not_checked(prefect_server, smoke_config,
                                                                                tmp_path):
    """gate_update=3 with a gate no loss passes: the first try stops after 3 of 5 updates without a check,
    the last try is never gated (it is the one kept), and MLflow has both tries' updates."""
    from ttscale.flows.train_base import train_base

    config = _restarting(smoke_config, restarts=1, gate_update=3, gate_loss=1e-6)
    train_base(config=config, workdir=str(tmp_path))
    record = json.loads((tmp_path / "models" / "base" / "ttscale_train.json").read_text())
    assert record["tries"] == 2 and record["updates"] == 5 and record["stopped_by"] == "updates"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    updates = client.get_metric_history(record["mlflow_run_id"], "try_updates")
    assert sorted((m.step, m.value) for m in updates) == [(0, 3.0), (1, 5.0)]
    assert [m.step for m in client.get_metric_history(record["mlflow_run_id"], "check_pass_at_1")] == [1]
    with pytest.raises(ValueError, match="gate_update=5 must come before max_updates=5"):
        config.base_model.model_validate({**config.base_model.model_dump(), "gate_update": 5})


def test_a_killed_train_base_resumes_at_the_next_seed(prefect_server, smoke_config, tmp_path, monkeypatch):
    """The first try is gated (real training), the second is killed; the resumed run trains seeds +1 and +2
    only, logs all three tries in its MLflow run, and leaves no ledger behind."""
    import ttscale.flows.train_base as train_base_flow

    real, seeds, kill = train_base_flow.train_model, [], {"at": 2}

    def recording(task_cfg, model_cfg, out_dir, stage="train-base", stop_above=None):
        seeds.append(model_cfg.seed)
        if len(seeds) == kill["at"]:
            raise RuntimeError("killed")
        return real(task_cfg, model_cfg, out_dir, stage, stop_above)

    monkeypatch.setattr(train_base_flow, "train_model", recording)
    config = _restarting(smoke_config, restarts=2, gate_update=3, gate_loss=1e-6)
    s0 = config.base_model.seed
    with pytest.raises(Exception, match="killed"):
        train_base_flow.train_base(config=config, workdir=str(tmp_path))
    assert seeds == [s0, s0 + 1] and (tmp_path / "models" / "base.tries.json").exists()
    seeds.clear()
    kill["at"] = 0
    train_base_flow.train_base(config=config, workdir=str(tmp_path))
    assert seeds == [s0 + 1, s0 + 2]
    record = json.loads((tmp_path / "models" / "base" / "ttscale_train.json").read_text())
    assert record["tries"] == 3 and record["seed"] == s0 + 2
    assert not (tmp_path / "models" / "base.tries.json").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    updates = client.get_metric_history(record["mlflow_run_id"], "try_updates")
    assert sorted((m.step, m.value) for m in updates) == [(0, 3.0), (1, 3.0), (2, 5.0)]


def test_restarts_stop_at_the_first_model_that_learned(prefect_server, smoke_config, tmp_path, monkeypatch):
    """The second try passes the check (here by a stand-in for the sampler), so a third is never trained."""
    import ttscale.flows.train_base as train_base_flow

    shares = iter([0.1, 0.9])
    checked: list[int] = []

    def check(out_dir, problems, samples):
        checked.append(len(problems))
        return {0: next(shares)}

    monkeypatch.setattr(train_base_flow.tiny, "sampled_pass_at_1", check)
    config = _restarting(smoke_config, restarts=3)
    train_base_flow.train_base(config=config, workdir=str(tmp_path))
    record = json.loads((tmp_path / "models" / "base" / "ttscale_train.json").read_text())
    assert record["tries"] == 2 and record["seed"] == config.base_model.seed + 1
    assert checked == [4, 4]  # the configured level-1 train problems, twice
