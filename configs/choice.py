"""The short way to a run, as the Prefect UI's form offers it first: a preset and the few settings
people change most. The full config stays beside it for those who want every field.

Every flow takes `preset: PresetChoice` before `config`. Seen in Chromium, a form that is the
whole config is 138 fields in nested sections with no preset selector, and changing N means
scrolling a wall; this one is a drop-down and six fields. The choice is turned into the same
`--set KEY=VALUE` overrides the CLI takes and validated by the same `load_config`, so a value the
CLI refuses, the form refuses with the same message; the bounds here (N >= 1, budgets >= 1) are
also in the form's JSON schema, so the UI refuses them before anything starts.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import yaml

from pydantic import Field

from ttscale.configs import load_config, overlay, parse_config, parse_overrides, presets
from ttscale.configs.schema import Frozen, PipelineConfig, TaskConfig

PresetName = Literal[tuple(presets())]  # type: ignore[valid-type]  # the YAML files shipped in configs/
TaskKind = TaskConfig.model_fields["kind"].annotation


class PresetChoice(Frozen):
    """Start from a preset and change a few common settings; leave a field empty to keep the preset's."""

    name: PresetName = Field(default="tiny", description="a bundled preset (`ttscale presets`)")
    file: str | None = Field(default=None, description="or a YAML preset on the worker's disk (wins over name)")
    task_kind: TaskKind | None = Field(default=None, description="task.kind (`ttscale tasks` lists them)")
    task_path: str | None = Field(default=None, description="task.path: your problem file (jsonl, omni_math)")
    n: int | None = Field(default=None, ge=1, description="bank.n: candidates per problem")
    budgets: list[Annotated[int, Field(ge=1)]] | None = Field(default=None, min_length=1,
                                                              description="search.budgets: N per search run")
    backend: Literal["hf", "vllm", "openai"] | None = Field(default=None, description="generator.backend")

    def overrides(self) -> list[str]:
        """The choice as the CLI's `--set KEY=VALUE` (values in flow style, read back as YAML)."""
        keys = {"task.kind": self.task_kind, "task.path": self.task_path, "bank.n": self.n,
                "search.budgets": self.budgets, "generator.backend": self.backend}
        return [f"{key}={_yaml(value)}" for key, value in keys.items() if value is not None]

    def resolve(self, config: PipelineConfig | None = None) -> PipelineConfig:
        """The config a run uses: `config` when one is given (else the preset), with the overrides on top."""
        overrides = self.overrides()
        if config is None:
            return load_config(self.file or self.name, overrides)
        if not overrides:
            return config
        changed = overlay(config.model_dump(mode="json"), parse_overrides(overrides))
        return parse_config(changed, f"the form's config with --set {' '.join(overrides)}")


def _yaml(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, str):  # quoted unless YAML reads it back as the same plain word
        plain = re.fullmatch(r"[A-Za-z0-9_./-]+", value) and yaml.safe_load(value) == value
        return value if plain else "'" + value.replace("'", "''") + "'"
    return str(value)


__all__ = ["PresetChoice", "PresetName"]
