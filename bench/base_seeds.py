"""Does the embedded base model learn its task under these settings? Trains it and counts greedy answers.

    python bench/base_seeds.py TAG [--set KEY=VALUE ...]   e.g.  bench/base_seeds.py s2 --set base_model.seed=2

Prints the final (EMA) training loss, the loss every 400 updates, the share of the first 100 test
problems answered right greedily, pass@1 by level when sampling at T = 1 (what the bank draws;
on 2026-12-07 two models that answered 0.58 and 0.78 greedily sampled 0.14 and 0.69) and,
teacher-forced on their reference solutions, the share of each field's digits predicted right
(counter, value, key, result; the first step apart from the later ones, and the answer line);
asserts nothing. On 2026-12-06 a seed that answered nothing (seed 2) had every
field at 0.97-1.00 except one: the first step's copy of the start value from the question's init
line, 0.31-0.40 per digit on every level. Why it exists: the base model's training crosses a
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
from transformers import PreTrainedTokenizerFast, PreTrainedModel

from ttscale.configs import load_config
from ttscale.models import tiny
from ttscale.tasks import arith
from ttscale.tasks.problems import load_problems


# Character columns of a step line `RR: VVVV#KKKK=XXXX` (arith.STEP_TEMPLATE) and what each holds.
FIELDS = {**dict.fromkeys(range(0, 2), "counter"), **dict.fromkeys(range(4, 8), "value"),
          **dict.fromkeys(range(9, 13), "key"), **dict.fromkeys(range(14, 18), "result")}


def field_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, problems: list) -> dict[str, float]:
    """Teacher-forced: which part of a step the model gets wrong, when everything before it is right."""
    hits: dict[str, list[int]] = {}
    with torch.no_grad():
        for p in problems:
            prompt_ids = tokenizer.encode(arith.prompt(p.question), add_special_tokens=True)
            reference = p.meta["reference_solution"]
            solution_ids = tokenizer.encode(reference, add_special_tokens=False)
            logits = model(input_ids=torch.tensor([prompt_ids + solution_ids])).logits[0]
            predicted = logits[len(prompt_ids) - 1 : -1].argmax(-1).tolist()
            offset = 0
            for line_no, line in enumerate(reference.split(arith.STEP_DELIMITER)):
                for column in range(len(line)):
                    field = "answer" if line.startswith("ans=") else FIELDS.get(column)
                    if field is None:
                        continue
                    name = field if field == "answer" else ("first " if line_no == 0 else "later ") + field
                    right = predicted[offset + column] == solution_ids[offset + column]
                    hits.setdefault(name, [0, 0])
                    hits[name][0] += right
                    hits[name][1] += 1
                offset += len(line) + len(arith.STEP_DELIMITER)
    return {name: right / total for name, (right, total) in sorted(hits.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tag")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--samples", type=int, default=4, help="samples per problem at T = 1 (what the bank draws)")
    args = parser.parse_args()
    cfg = load_config(args.preset, args.overrides)
    out = Path("/tmp/base-seeds") / args.tag
    start = time.monotonic()
    result = tiny.train(cfg.base_model, arith.training_stream(cfg.task, cfg.base_model.seed), out)
    model, tokenizer = tiny.load_trained(out)
    problems = [p for p in load_problems(cfg.task) if p.split == "test"][: args.problems]
    greedy = tiny.pass_at_1(model, tokenizer, problems)
    sampled = tiny.pass_at_1(model, tokenizer, problems, args.samples, temperature=1.0, top_k=0)
    by_level = " / ".join(f"{sampled[level]:.2f}" for level in sorted(sampled) if level > 0)
    fields = ", ".join(f"{name} {share:.2f}" for name, share in field_accuracy(model, tokenizer, problems).items())
    curve = ", ".join(f"{u}: {loss:.3f}" for u, loss in result.losses if u % 400 == 0)
    print(f"{args.tag} {' '.join(args.overrides)}: final loss {result.final_loss:.3f}, greedy "
          f"{greedy[0]:.2f} on {len(problems)} test problems, sampled pass@1 {sampled[0]:.3f} "
          f"(levels {by_level}), {time.monotonic() - start:.0f} s "
          f"({result.stopped_by}); loss by update {{{curve}}}; teacher-forced digits right: {fields}")


if __name__ == "__main__":
    main()
