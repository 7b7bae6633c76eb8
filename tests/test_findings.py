"""The six findings: verdicts follow the stage statements, and a stage that did not run is 'not measured'."""

from __future__ import annotations

from tasks.findings import (NOT_MEASURED, REPRODUCED, allocation_finding, exchange_finding, findings_markdown,
                            revision_finding, search_findings, verifier_finding)


def test_verdicts_follow_the_statements():
    small, large = search_findings([
        "Beam search above best-of-N at a small budget (N=2): holds: beam 0.7 [0.6, 0.8] vs best-of-N 0.4 [0.3, 0.5].",
        "Best-of-N catches up with beam search on easy problems (level 1, N=8): does not hold: ... "
        "(intervals overlap: not distinguishable here).",
        "Lookahead below beam search (N=4): holds: ... (intervals overlap: not distinguishable here)."])
    assert small.verdict == REPRODUCED
    assert large.verdict == "not reproduced, every comparison within noise" and len(large.evidence) == 2
    assert verifier_finding(["N=16: ... above, intervals do not overlap."]).verdict == REPRODUCED
    assert verifier_finding(["N=16: ... not above."]).verdict.startswith("not reproduced")
    assert revision_finding(["Revision model pass@1 at turn 0: 0.4"]).verdict == NOT_MEASURED


def test_missing_stages_are_not_measured_and_the_4x_needs_an_uncensored_ratio():
    assert all(f.verdict == NOT_MEASURED for f in (verifier_finding([]), revision_finding([]),
                                                    allocation_finding([], []), exchange_finding([])))
    censored = [{"ratio": 4.0, "censored": "<="}, {"ratio": 1.1, "censored": ""}]
    assert allocation_finding(censored, []).verdict.startswith("not reproduced")
    gain = {"ratio": 2.5, "censored": "", "optimal_lo": 0.6, "baseline_accuracy": 0.5}
    assert allocation_finding([gain], []).verdict == REPRODUCED
    noisy = {**gain, "optimal_lo": 0.32, "baseline_accuracy": 0.475}  # 2.4x on 20 problems, interval [0.32, 0.73]
    assert allocation_finding([noisy], []).verdict == REPRODUCED + ", every comparison within noise"
    rows = [dict(ratio=r, bin=b, samples_used=8, lower_bound=False, small_optimal=s, large_greedy=g, large_lo=0.0,
                 large_hi=1.0,
                 winner="test-time compute" if s > g else "pretraining")
            for r, b, s, g in [(0.16, 1, 0.9, 0.5), (0.16, 2, 0.8, 0.5), (0.16, 3, 0.2, 0.5),
                               (22.0, 1, 0.4, 0.5), (22.0, 2, 0.4, 0.5), (22.0, 3, 0.1, 0.5)]]
    assert exchange_finding(rows).verdict == REPRODUCED
    rows[0]["winner"] = "pretraining"
    assert exchange_finding(rows).verdict.startswith("not reproduced")
    text = findings_markdown([exchange_finding(rows), revision_finding([])], "t")
    assert "| 6 |" in text and "its stage did not run" in text
