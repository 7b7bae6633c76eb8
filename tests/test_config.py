from pathlib import Path

import pytest

from ttscale.configs import ConfigError, load_config, presets
from ttscale.configs.schema import PipelineConfig


def test_bundled_presets_validate():
    assert {"tiny", "smoke", "flops-matched", "gpu"} <= set(presets())
    for name in presets():
        assert isinstance(load_config(name), PipelineConfig)


def test_search_presets_cover_several_widths_and_depths_and_the_gpu_one_reaches_256():
    from ttscale.flows.search import plan

    for name, top, depths in (("paper-cpu", 8, {1}), ("gpu", 256, {1, 3})):
        runs = plan(load_config(name).search, "context")
        assert max(r.budget for r in runs) == top
        assert len({r.width for r in runs if r.strategy == "beam"}) >= 2
        assert {r.depth for r in runs if r.strategy == "lookahead"} >= depths


def test_a_preset_extends_another_and_states_only_what_it_changes(tmp_path: Path):
    paper, tiny = load_config("paper-cpu"), load_config("tiny")
    assert paper.search.problems == 100 and paper.name == "paper-cpu"
    assert paper.model_dump(exclude={"name", "search"}) == tiny.model_dump(exclude={"name", "search"})
    assert paper.search.model_dump(exclude={"problems", "strategies", "seeds"}) == tiny.search.model_dump(
        exclude={"problems", "strategies", "seeds"})
    assert set(paper.search.strategies) - set(tiny.search.strategies) == {"lookahead"}
    assert set(tiny.search.seeds) < set(paper.search.seeds)  # tiny's search runs are paper-cpu's too
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {tmp_path / 'parent.yaml'}\nbank:\n  nn: 3\n")
    (tmp_path / "parent.yaml").write_text("extends: tiny\nbank:\n  n: 4\n")
    with pytest.raises(ConfigError, match="bank.nn"):  # the child's own typo is still named
        load_config(str(child))
    (tmp_path / "parent.yaml").write_text(f"extends: {child}\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(str(child))


def test_typo_names_key_and_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbank:\n  nn: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(bad))
    assert str(bad) in str(err.value) and "bank.nn" in str(err.value) and "unknown key" in str(err.value)


def test_bad_value_names_key_and_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generator:\n  backend: tensorrt\nbank:\n  n: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(bad))
    message = str(err.value)
    assert "generator.backend" in message and "bank.n" in message and str(bad) in message


def test_missing_preset_is_clear():
    with pytest.raises(ConfigError, match="no preset named 'nope'"):
        load_config("nope")


def test_configs_are_frozen():
    cfg = load_config("smoke")
    with pytest.raises(Exception):
        cfg.bank.n = 3  # type: ignore[misc]


def test_revision_settings_that_cannot_work_are_refused(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("revisions:\n  chains:\n    budget: 6\n")
    with pytest.raises(ConfigError, match="power of two"):
        load_config(str(bad))
    bad.write_text("revisions:\n  reviser:\n    max_seq_len: 256\n  chains:\n    max_tokens: 320\n")
    with pytest.raises(ConfigError, match="cannot hold a problem and one attempt"):
        load_config(str(bad))
    bad.write_text("base_model:\n  max_seq_len: 384\nrevisions:\n  reviser:\n    max_seq_len: 2048\n")
    with pytest.raises(ConfigError, match="beyond base_model.max_seq_len=384"):
        load_config(str(bad))
    bad.write_text("generator:\n  model: smollm2\nbase_model:\n  max_seq_len: 384\nrevisions:\n  reviser:\n"
                   "    max_seq_len: 2048\n")
    assert load_config(str(bad)).revisions.reviser.max_seq_len == 2048  # a pretrained model knows its positions
    bad.write_text("revisions:\n  chains:\n    rule: best_guess\n")
    with pytest.raises(ConfigError, match="revisions.chains.rule"):
        load_config(str(bad))
    assert load_config("tiny", ["revisions.data.context=slips"]).revisions.data.context == "slips"
    with pytest.raises(ConfigError, match="task.kind=gsm8k has no exact steps to slip"):
        load_config("tiny", ["revisions.data.context=slips", "task.kind=gsm8k", "generator.model=smollm2"])


def test_the_forms_short_way_is_validated_as_the_cli_validates():
    """PresetChoice (the first section of every flow's form) becomes the CLI's --set overrides."""
    import pydantic

    from ttscale.configs import ConfigError, load_config
    from ttscale.configs.choice import PresetChoice

    choice = PresetChoice(name="smoke", n=4, budgets=[1, 2], backend="vllm")
    assert choice.overrides() == ["bank.n=4", "search.budgets=[1, 2]", "generator.backend=vllm"]
    assert choice.resolve() == load_config("smoke", ["bank.n=4", "search.budgets=[1, 2]", "generator.backend=vllm"])
    smoke = load_config("smoke")
    assert PresetChoice().resolve(smoke) == smoke  # a full config from the form, nothing changed on top
    assert PresetChoice(n=5).resolve(smoke).bank.n == 5
    for bad in ({"n": 0}, {"budgets": [0]}, {"budgets": []}, {"name": "no-such-preset"}, {"task_kind": "nope"}):
        with pytest.raises(pydantic.ValidationError):
            PresetChoice(**bad)
    with pytest.raises(ConfigError) as form:
        PresetChoice(name="smoke", task_kind="jsonl").resolve()
    with pytest.raises(ConfigError) as cli:
        load_config("smoke", ["task.kind=jsonl"])
    assert str(form.value) == str(cli.value) and "task.path" in str(form.value)


def test_a_prm_on_the_larger_backbone_needs_the_config_that_trains_it():
    """prm.backbone: large builds the trained PRM on the FLOPs-matched stage's model, so the pipeline must train
    that model first (scores_with_large), a config without one is refused in one line, and the ORM, always built
    on the reviser, refuses a backbone it would ignore."""
    large = ["scoring.baselines=[trained, oracle]", "prm.backbone=large"]
    assert load_config("flops-matched", large).scores_with_large
    assert not load_config("flops-matched", ["scoring.prm=confidence", "scoring.baselines=[oracle]",
                                             "prm.backbone=large"]).scores_with_large
    with pytest.raises(ConfigError, match=r"the trained PRM \(prm.backbone: large\) reads the larger"):
        load_config("tiny", ["prm.backbone=large"])
    with pytest.raises(ConfigError, match="the ORM is always built on the revision model"):
        load_config("flops-matched", ["revisions.orm.training.backbone=large"])


def test_a_scorer_is_a_name_or_another_models_confidence(tmp_path: Path):
    """scoring.prm and scoring.baselines take the named scorers, confidence:MODEL (another model's token
    probabilities), and nothing else; confidence:large needs the config that trains the larger model."""
    assert load_config("flops-matched").scores_with_large
    assert not load_config("flops-matched", ["scoring.baselines=[trained, oracle]",
                                             "prm.backbone=generator"]).scores_with_large
    with pytest.raises(ConfigError, match="confidence:large reads the larger embedded model"):
        load_config("tiny", ["scoring.baselines=[trained, 'confidence:large']"])
    for bad in ("confidence:", "confidenc", "large"):
        with pytest.raises(ConfigError, match="scoring.baselines"):
            load_config("tiny", [f"scoring.baselines=['{bad}']"])

    from ttscale.preflight import PreflightError, preflight

    missing = tmp_path / "no-such-model"
    with pytest.raises(PreflightError, match=f"scoring.baselines: 'confidence:{missing}' reads"):
        preflight(load_config("smoke", [f"scoring.baselines=['confidence:{missing}']"]), str(tmp_path / "wd"))
    with pytest.raises(PreflightError, match="scoring.prm: 'confidence:nope' reads 'nope'"):
        preflight(load_config("smoke", ["scoring.prm=confidence:nope"]), str(tmp_path / "wd"))
