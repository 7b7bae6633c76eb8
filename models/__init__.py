"""Generators (one interface, hf and vllm backends), the embedded tiny model, SmolLM2 conversion."""
