"""One comparison primitive: method A vs method B on the same problems at the same charged budget.

Every finding in the report is a set of these. A comparison takes each problem's
outcomes under A and under B (one value per seed, chain set or resample, each in [0, 1])
and returns the mean per-problem difference A - B with a paired bootstrap interval:
problems are resampled with replacement, and inside each drawn problem its seeds are
resampled too (nested), so a seed never counts as an extra problem and the interval is
clustered by problem. A is always the side the paper says wins, so "reproduced" means the
interval lies above zero, "contradicted" below, and anything else is "inconclusive". An
inconclusive comparison whose B leaves less room than the interval could detect (B solves
nearly every problem) is marked as one with too little room to show the claim (`could_show`),
so a ceiling reads as "not testable here", not as evidence against the paper.

Several variants against one baseline (beam M=2 and M=4 against best-of-N, or every
budget of a sweep) are a family: each interval is widened by Bonferroni to
1 - alpha / (family size), so picking the best of the family cannot manufacture a
verdict that the data do not support.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = "reproduced", "contradicted", "inconclusive", "not measured"
POWER = 0.8  # the smallest detectable difference is quoted at 80% power, two-sided


@dataclass(frozen=True)
class Comparison:
    """A vs B, paired by problem. effect, lo and hi are in the outcome's unit (accuracy), A - B."""

    finding: int
    claim: str  # which part of the finding this comparison tests
    a: str
    b: str
    stratum: str  # the problems compared: "all", "level 3", "bin 2", ...
    budget: float  # the charged budget both sides spent (paper's unit)
    effect: float
    lo: float
    hi: float
    problems: int
    detectable: float  # the smallest |A - B| these problems could show at 80% power
    family: int  # comparisons this one's interval was corrected for
    confidence: float
    unit: str = "accuracy"
    decides: bool = True  # False: shown for detail (e.g. per level), not part of the verdict
    # The most A - B these problems allow: the mean of 1 - B's accuracy (accuracy only; None where the
    # unit has no ceiling). Where B already solves nearly every problem, no A can be shown above it.
    headroom: float | None = None

    @property
    def verdict(self) -> str:
        return interval_verdict(self.lo, self.hi, self.problems)

    @property
    def could_show(self) -> bool:
        """Whether an A that beat B by all the room B leaves would be detected here (80% power): where not,
        an inconclusive verdict says nothing about the claim, and more problems of this kind cannot decide it."""
        return self.headroom is None or self.problems == 0 or self.headroom >= self.detectable

    @property
    def problems_to_decide(self) -> int | None:
        """Problems an effect of this size would need for the interval to exclude zero at 80% power."""
        if self.problems == 0 or abs(self.effect) < 1e-12:
            return None
        return int(np.ceil(self.problems * (self.detectable / abs(self.effect)) ** 2))

    def row(self) -> dict:
        return {**asdict(self), "verdict": self.verdict, "problems_to_decide": self.problems_to_decide,
                "could_show": self.could_show}


def interval_verdict(lo: float, hi: float, problems: int) -> str:
    """A - B's verdict from its interval alone: also for a comparison read back from stored numbers."""
    if problems == 0:
        return NOT_MEASURED
    if lo > 0:
        return REPRODUCED
    if hi < 0:
        return CONTRADICTED
    return INCONCLUSIVE


def detectable_difference(se: float, confidence: float) -> float:
    """The smallest true difference an interval of this width would exclude zero for at 80% power."""
    return (NormalDist().inv_cdf(0.5 + confidence / 2) + NormalDist().inv_cdf(POWER)) * se


def paired(a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], *, finding: int, claim: str,
           a_name: str, b_name: str, stratum: str = "all", budget: float = 0.0, family: int = 1,
           alpha: float = 0.05, resamples: int = 2000, seed: int = 0, unit: str = "accuracy",
           decides: bool = True) -> Comparison:
    """Paired bootstrap of mean(A - B) over the problems both sides have outcomes for.

    `a[p]` and `b[p]` are problem p's outcomes (one per seed or chain set); they need not
    be paired seed by seed, only problem by problem.
    """
    problems = sorted(p for p in set(a) & set(b) if len(a[p]) and len(b[p]))
    confidence = 1 - alpha / max(1, family)
    if not problems:
        return Comparison(finding, claim, a_name, b_name, stratum, budget, 0.0, 0.0, 0.0, 0, 0.0, family,
                          confidence, unit, decides)
    rng = np.random.default_rng(seed)
    va = [np.asarray(a[p], float) for p in problems]
    vb = [np.asarray(b[p], float) for p in problems]
    diff = np.array([x.mean() - y.mean() for x, y in zip(va, vb)])
    n = len(problems)
    draws = rng.integers(0, n, size=(resamples, n))
    if all(len(x) == 1 for x in va) and all(len(y) == 1 for y in vb):
        boot = diff[draws].mean(axis=1)
    else:  # nested: inside each drawn problem, redraw its seeds on each side
        boot = _nested(va, draws, rng) - _nested(vb, draws, rng)
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    # one problem flipping is the least change that this many problems can register
    se = max(float(boot.std(ddof=1)), 1.0 / n) if resamples > 1 else 1.0 / n
    detectable = detectable_difference(se, confidence)
    effect = float(diff.mean())
    headroom = float(np.mean([1.0 - y.mean() for y in vb])) if unit == "accuracy" else None
    return Comparison(finding, claim, a_name, b_name, stratum, budget, effect, float(min(lo, effect)),
                      float(max(hi, effect)), n, float(detectable), family, confidence, unit, decides, headroom)


def _nested(values: Sequence[np.ndarray], draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means over drawn problems, each problem's outcomes redrawn with replacement: (resamples,)."""
    lengths = np.array([len(v) for v in values])
    padded = np.zeros((len(values), lengths.max()))
    for i, v in enumerate(values):
        padded[i, : len(v)] = v
    size = lengths[draws]  # (resamples, n)
    picks = (rng.random((*draws.shape, lengths.max())) * size[..., None]).astype(int)
    taken = padded[draws[..., None], picks]
    live = np.arange(lengths.max()) < size[..., None]
    per_problem = (taken * live).sum(axis=-1) / size
    return per_problem.mean(axis=1)


def claim_verdict(comparisons: Sequence[Comparison]) -> str:
    """One claim's verdict from its family: reproduced when some interval excludes zero in the paper's
    direction and none the other way; contradicted the reverse; inconclusive otherwise."""
    measured = [c for c in comparisons if c.decides and c.verdict != NOT_MEASURED]
    if not measured:
        return NOT_MEASURED
    verdicts = {c.verdict for c in measured}
    if REPRODUCED in verdicts and CONTRADICTED not in verdicts:
        return REPRODUCED
    if CONTRADICTED in verdicts and REPRODUCED not in verdicts:
        return CONTRADICTED
    return INCONCLUSIVE


def finding_verdict(claims: Mapping[str, Sequence[Comparison]]) -> str:
    """A finding with several claims is reproduced only when every claim is, contradicted when any is."""
    verdicts = [claim_verdict(cs) for cs in claims.values()]
    if not verdicts or all(v == NOT_MEASURED for v in verdicts):
        return NOT_MEASURED
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return INCONCLUSIVE
