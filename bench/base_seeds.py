"""Does the embedded base model learn its task under these settings? Trains it and counts greedy answers.

    python bench/base_seeds.py TAG [--set KEY=VALUE ...]   e.g.  bench/base_seeds.py s2 --set base_model.seed=2

Prints the final (EMA) training loss, the loss every 400 updates and the share of the first 100 test
problems answered right greedily; asserts nothing. Why it exists: the base model's training crosses a
plateau (loss ~0.5: steps copied, sums not yet learned) at a point that depends on the seed and on the
CPU's float kernels, and a run that crosses it late ends with a model that answers almost nothing
(README, "The base model"). Run several seeds on a new machine type before trusting its findings.
The model is written to /tmp/base-seeds/TAG.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from ttscale.configs import load_config
from ttscale.models import tiny
from ttscale.tasks import arith
from ttscale.tasks.problems import load_problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tag")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--problems", type=int, default=100)
    args = parser.parse_args()
    cfg = load_config(args.preset, args.overrides)
    out = Path("/tmp/base-seeds") / args.tag
    start = time.monotonic()
    result = tiny.train(cfg.base_model, arith.training_stream(cfg.task, cfg.base_model.seed), out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
    tokenizer.padding_side = "left"
    problems = [p for p in load_problems(cfg.task) if p.split == "test"][: args.problems]
    right = 0
    with torch.no_grad():
        for i in range(0, len(problems), 25):
            batch = problems[i : i + 25]
            enc = tokenizer([arith.prompt(p.question) for p in batch], return_tensors="pt", padding=True)
            gen = model.generate(**enc, max_new_tokens=320, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            right += sum(arith.grade(t, p.answer)[1] for t, p in zip(texts, batch))
    curve = ", ".join(f"{u}: {loss:.3f}" for u, loss in result.losses if u % 400 == 0)
    print(f"{args.tag} {' '.join(args.overrides)}: final loss {result.final_loss:.3f}, greedy "
          f"{right / len(problems):.2f} on {len(problems)} test problems, {time.monotonic() - start:.0f} s "
          f"({result.stopped_by}); loss by update {{{curve}}}")


if __name__ == "__main__":
    main()
