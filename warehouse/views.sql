-- Curves a user can get with SQL alone. Views are recreated on every read-write open.

-- pass@k per bank and level (0 = all problems; a problem without a level has level 0), unbiased estimator 1 - C(n-c, k) / C(n, k)
-- computed as a product to stay exact for large n; k runs over powers of two up to n.
CREATE OR REPLACE VIEW per_problem AS
SELECT c.bank_id, c.problem_id, p.level, count(*) AS n, sum(c.correct::INT) AS c
FROM candidates c JOIN problems p USING (problem_id)
WHERE c.method = 'sample'
GROUP BY ALL;

CREATE OR REPLACE VIEW pass_at_k AS
WITH ks AS (
    SELECT DISTINCT pp.bank_id, (2 ** e)::INT AS k
    FROM per_problem pp, range(0, 16) t(e)
    WHERE (2 ** e) <= pp.n
),
scored AS (
    SELECT pp.bank_id, pp.level, pp.problem_id, ks.k,
           CASE WHEN pp.n - pp.c < ks.k THEN 1.0
                ELSE 1.0 - exp(coalesce(sum(ln(1.0 - ks.k / (pp.n - i)::DOUBLE)), 0.0))
           END AS pass
    FROM per_problem pp
    JOIN ks USING (bank_id)
    LEFT JOIN range(0, 100000) r(i) ON r.i < pp.c AND pp.n - pp.c >= ks.k
    GROUP BY pp.bank_id, pp.level, pp.problem_id, ks.k, pp.n, pp.c
)
SELECT bank_id, level, k, avg(pass) AS pass_at_k, count(*) AS problems
FROM scored WHERE level > 0 GROUP BY bank_id, level, k  -- level 0: the dataset gives none (GSM8K), so only "all"
UNION ALL
SELECT bank_id, 0 AS level, k, avg(pass), count(*)
FROM scored GROUP BY bank_id, k
ORDER BY bank_id, level, k;

-- One row per scored candidate with its step scores aggregated four ways.
CREATE OR REPLACE VIEW candidate_scores AS
SELECT s.scorer_id, c.bank_id, c.problem_id, s.candidate_id, c.final_answer, c.correct,
       arg_max(s.score, s.step_index) AS last, min(s.score) AS min,
       product(s.score) AS prod, avg(s.score) AS mean,
       max(s.prefix_tokens) AS scored_tokens
FROM step_scores s JOIN candidates c USING (candidate_id)
GROUP BY ALL;

-- What each rule picks from a problem's whole bank (N = all candidates), in SQL:
-- best-of-N weighted sums the last-step scores per final answer, majority counts them,
-- best-of-N takes the single best candidate. Unparseable answers never win a vote.
CREATE OR REPLACE VIEW bank_selection AS
WITH per_answer AS (
    SELECT scorer_id, bank_id, problem_id, final_answer,
           bool_or(correct) AS correct, count(*) AS votes, sum(last) AS weight, max(last) AS best
    FROM candidate_scores WHERE final_answer IS NOT NULL
    GROUP BY ALL
)
SELECT a.scorer_id, a.bank_id, a.problem_id, p.level,
       arg_max(a.correct, a.weight) AS weighted_correct,
       arg_max(a.correct, a.votes) AS majority_correct,
       arg_max(a.correct, a.best) AS best_of_n_correct,
       bool_or(a.correct) AS oracle_correct
FROM per_answer a JOIN problems p USING (problem_id)
GROUP BY ALL;

-- The verifier curves (accuracy vs N per rule, aggregation and level) with intervals.
CREATE OR REPLACE VIEW verifier_curves AS
SELECT bank_id, scorer_id, level, rule, aggregation, n, accuracy, lo, hi, resamples, problems
FROM selection_curves
ORDER BY bank_id, scorer_id, level, rule, aggregation, n;

-- What labeling cost, per problem: the labeled solutions plus every rollout.
CREATE OR REPLACE VIEW labeling_cost AS
WITH samples AS (
    SELECT problem_id, bank_id, count(*) AS samples,
           sum(prompt_tokens + generated_tokens) AS tokens, sum(flops) AS flops
    FROM candidates WHERE method = 'label' GROUP BY ALL
), rollouts AS (
    SELECT c.problem_id, c.bank_id, sum(l.rollouts) FILTER (WHERE l.kind = 'rollouts') AS rollouts,
           sum(l.prompt_tokens + l.generated_tokens) AS tokens, sum(l.flops) AS flops
    FROM step_labels l JOIN candidates c USING (candidate_id) GROUP BY ALL
)
SELECT s.bank_id AS label_bank_id, s.problem_id, s.samples, coalesce(r.rollouts, 0) AS rollouts,
       s.tokens + coalesce(r.tokens, 0) AS tokens, s.flops + coalesce(r.flops, 0) AS flops
FROM samples s LEFT JOIN rollouts r USING (problem_id, bank_id);

-- Accuracy vs generation budget per strategy (and M, k), overall (level 0) and per level,
-- averaged over problems and seeds, with the spread across seeds, an interval, and the mean cost.
CREATE OR REPLACE VIEW accuracy_vs_budget AS
WITH per_seed AS (
    SELECT s.scorer_id, s.strategy, s.width, s.lookahead, s.budget, s.charged, s.seed, p.level,
           avg(s.correct::INT) AS accuracy, count(*) AS problems,
           avg(s.generated_tokens + s.prompt_tokens) AS tokens, avg(s.flops) AS flops
    FROM selections s JOIN problems p USING (problem_id)
    GROUP BY GROUPING SETS ((s.scorer_id, s.strategy, s.width, s.lookahead, s.budget, s.charged, s.seed, p.level),
                            (s.scorer_id, s.strategy, s.width, s.lookahead, s.budget, s.charged, s.seed))
    HAVING grouping(p.level) = 1 OR p.level > 0  -- level 0: the dataset gives none, so only under "all"
), pooled AS (
    SELECT scorer_id, strategy, width, lookahead, budget, charged, coalesce(level, 0) AS level,
           avg(accuracy) AS accuracy, min(accuracy) AS seed_min, max(accuracy) AS seed_max,
           count(*) AS seeds, max(problems) AS problems, max(problems) AS n, avg(tokens) AS tokens_per_problem,
           avg(flops) AS flops_per_problem
    FROM per_seed
    GROUP BY ALL
)
-- lo/hi: a 95% Wilson interval clustered by problem: n is the number of problems, not problems x seeds
-- (a seed is a redraw of the same problem, not a new one).
SELECT scorer_id, strategy, width, lookahead, budget, charged, level, accuracy, seed_min, seed_max, seeds, problems,
       least(accuracy, greatest(0.0, (accuracy + 1.9208 / n
             - 1.96 * sqrt(accuracy * (1 - accuracy) / n + 0.9604 / (n * n))) / (1 + 3.8416 / n))) AS lo,
       greatest(accuracy, least(1.0, (accuracy + 1.9208 / n
             + 1.96 * sqrt(accuracy * (1 - accuracy) / n + 0.9604 / (n * n))) / (1 + 3.8416 / n))) AS hi,
       tokens_per_problem, flops_per_problem
FROM pooled
ORDER BY scorer_id, strategy, width, lookahead, level, budget;

-- Accuracy per (N, L) and rule, overall (level 0) and per level, with a 95% Wilson
-- interval clustered by problem (chain sets are redraws of the same problem, not new ones).
CREATE OR REPLACE VIEW revision_curves AS
WITH acc AS (
    SELECT s.chain_set_id, s.run_id, s.rule, s.budget, s.length, coalesce(p.level, 0) AS level,
           avg(s.correct::INT) AS accuracy, count(*) AS selections, count(DISTINCT s.problem_id) AS n
    FROM revision_selections s JOIN problems p USING (problem_id)
    GROUP BY GROUPING SETS ((s.chain_set_id, s.run_id, s.rule, s.budget, s.length, p.level),
                            (s.chain_set_id, s.run_id, s.rule, s.budget, s.length))
    HAVING grouping(p.level) = 1 OR p.level > 0
)
SELECT chain_set_id, run_id, rule, level, budget, length, budget // length AS chains, accuracy, selections,
       least(accuracy, greatest(0.0, (accuracy + 1.9208 / n
             - 1.96 * sqrt(accuracy * (1 - accuracy) / n + 0.9604 / (n * n))) / (1 + 3.8416 / n))) AS lo,
       greatest(accuracy, least(1.0, (accuracy + 1.9208 / n
             + 1.96 * sqrt(accuracy * (1 - accuracy) / n + 0.9604 / (n * n))) / (1 + 3.8416 / n))) AS hi
FROM acc
ORDER BY chain_set_id, run_id, rule, level, budget, length;

-- Accuracy of the t-th attempt of a chain (pass@1 at turn t), per level (0 = all).
CREATE OR REPLACE VIEW revision_turns AS
SELECT a.chain_set_id, coalesce(p.level, 0) AS level, a.position, avg(a.correct::INT) AS accuracy, count(*) AS attempts
FROM revision_attempts a JOIN problems p USING (problem_id)
GROUP BY GROUPING SETS ((a.chain_set_id, p.level, a.position), (a.chain_set_id, a.position))
HAVING grouping(p.level) = 1 OR p.level > 0
ORDER BY 1, 2, 3;

-- Every attempt after the first of its chain, with whether the attempt before it was correct and the
-- chance it would be correct if it ignored the attempts before it: its problem's accuracy at turn 0
-- (no context) in the same chain set, leaving out the attempt before it when that one is at turn 0.
-- That chance is the null a reviser must beat to show it uses its earlier attempts.
CREATE OR REPLACE VIEW revision_pairs AS
WITH pairs AS (
    SELECT chain_set_id, problem_id, chain, position, correct,
           lag(correct) OVER (PARTITION BY chain_set_id, problem_id, chain ORDER BY position) AS before
    FROM revision_attempts
), first_turn AS (
    SELECT chain_set_id, problem_id, sum(correct::INT) AS solved, count(*) AS attempts
    FROM revision_attempts WHERE position = 0 GROUP BY ALL
)
SELECT p.*, (f.solved - CASE WHEN p.position = 1 AND p.before THEN 1 ELSE 0 END)
            / nullif(f.attempts - CASE WHEN p.position = 1 THEN 1 ELSE 0 END, 0) AS p_independent
FROM pairs p JOIN first_turn f USING (chain_set_id, problem_id)
WHERE p.before IS NOT NULL;

-- How attempts change the answer's correctness from one turn to the next; `independent_*` are the
-- counts expected if every attempt ignored the ones before it (revision_pairs.p_independent).
CREATE OR REPLACE VIEW revision_transitions AS
SELECT chain_set_id,
       count(*) FILTER (WHERE before) AS after_correct,
       count(*) FILTER (WHERE before AND NOT correct) AS correct_to_incorrect,
       count(*) FILTER (WHERE NOT before) AS after_incorrect,
       count(*) FILTER (WHERE NOT before AND correct) AS incorrect_to_correct,
       sum(1 - p_independent) FILTER (WHERE before) AS independent_correct_to_incorrect,
       sum(p_independent) FILTER (WHERE NOT before) AS independent_incorrect_to_correct
FROM revision_pairs
GROUP BY chain_set_id;

-- The findings of the most recent report: one row per finding with its verdict and strongest comparison.
CREATE OR REPLACE VIEW latest_findings AS
WITH latest AS (
    SELECT f.* FROM findings f
    WHERE f.run_id = (SELECT run_id FROM runs WHERE stage = 'report' AND status = 'finished'
                      ORDER BY finished_at DESC LIMIT 1)
)
SELECT finding, any_value(finding_verdict) AS verdict, count(*) FILTER (WHERE decides) AS comparisons,
       arg_max(a || ' vs ' || b || ' (' || stratum || ', N=' || budget || ')', CASE WHEN decides THEN lo ELSE -1e9 END)
           AS strongest, max(lo) FILTER (WHERE decides) AS best_lo, min(problems) AS min_problems
FROM latest GROUP BY finding ORDER BY finding;
