-- The warehouse: every problem, candidate and step, keyed deterministically so that
-- re-running a stage inserts nothing twice (writes use INSERT OR IGNORE on these keys).

CREATE TABLE IF NOT EXISTS runs (
    run_id        VARCHAR PRIMARY KEY,   -- hash of stage + its config
    stage         VARCHAR NOT NULL,
    preset        VARCHAR,
    config        JSON NOT NULL,
    mlflow_run_id VARCHAR,
    prefect_flow_run_id VARCHAR,
    started_at    TIMESTAMP NOT NULL,
    finished_at   TIMESTAMP,
    status        VARCHAR NOT NULL       -- running | finished | failed
);

CREATE TABLE IF NOT EXISTS problems (
    problem_id VARCHAR PRIMARY KEY,
    source     VARCHAR NOT NULL,
    split      VARCHAR NOT NULL,
    index      INTEGER NOT NULL,
    level      INTEGER NOT NULL,
    question   VARCHAR NOT NULL,
    answer     VARCHAR NOT NULL,
    meta       JSON
);

CREATE TABLE IF NOT EXISTS candidates (
    candidate_id     VARCHAR PRIMARY KEY,  -- hash(bank_id, problem_id, sample_index)
    bank_id          VARCHAR NOT NULL,     -- hash(model, sampling spec): one bank per model and spec
    run_id           VARCHAR NOT NULL,
    problem_id       VARCHAR NOT NULL,
    method           VARCHAR NOT NULL,     -- 'sample' for the bank; search methods later
    budget           INTEGER NOT NULL,     -- N of the call that produced it
    sample_index     INTEGER NOT NULL,
    seed             BIGINT NOT NULL,
    model            VARCHAR NOT NULL,
    text             VARCHAR NOT NULL,
    final_answer     VARCHAR,              -- NULL when no answer could be parsed
    correct          BOOLEAN NOT NULL,
    n_steps          INTEGER NOT NULL,
    prompt_tokens    INTEGER NOT NULL,
    generated_tokens INTEGER NOT NULL,
    finish_reason    VARCHAR NOT NULL,
    flops            DOUBLE NOT NULL,      -- 2 * params * (prompt + generated tokens)
    created_at       TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS steps (
    candidate_id VARCHAR NOT NULL,
    step_index   INTEGER NOT NULL,
    text         VARCHAR NOT NULL,
    PRIMARY KEY (candidate_id, step_index)
);

CREATE TABLE IF NOT EXISTS metrics (
    run_id VARCHAR NOT NULL,
    name   VARCHAR NOT NULL,  -- e.g. pass@k, majority@k, guess@k
    level  INTEGER NOT NULL,  -- 0 = all levels
    k      INTEGER NOT NULL,
    value  DOUBLE NOT NULL,
    PRIMARY KEY (run_id, name, level, k)
);

-- Monte-Carlo step labels (PRM training data). The labeled solutions themselves are
-- rows of `candidates` (method 'label') with their `steps`. A step's label is the share
-- of its rollouts that reached the right answer; the last step's one "rollout" is the
-- candidate's own ending, which is exact.
CREATE TABLE IF NOT EXISTS step_labels (
    candidate_id     VARCHAR NOT NULL,
    step_index       INTEGER NOT NULL,
    run_id           VARCHAR NOT NULL,
    kind             VARCHAR NOT NULL,     -- 'rollouts' (sampled) | 'outcome' (the last step: graded as is)
    rollouts         INTEGER NOT NULL,
    correct          INTEGER NOT NULL,     -- rollouts that reached the reference answer
    label            DOUBLE NOT NULL,      -- correct / rollouts
    prompt_tokens    BIGINT NOT NULL,      -- labeling compute spent on this step's rollouts
    generated_tokens BIGINT NOT NULL,
    flops            DOUBLE NOT NULL,
    PRIMARY KEY (candidate_id, step_index)
);

-- One PRM score per step prefix of a candidate, per scorer (a scorer is one PRM's weights
-- plus how steps are presented to it). One forward pass scores all prefixes of a
-- candidate; prefix_tokens is how many tokens the score at this step has read.
CREATE TABLE IF NOT EXISTS step_scores (
    scorer_id     VARCHAR NOT NULL,
    candidate_id  VARCHAR NOT NULL,
    step_index    INTEGER NOT NULL,
    run_id        VARCHAR NOT NULL,
    score         DOUBLE NOT NULL,
    prefix_tokens INTEGER NOT NULL,
    PRIMARY KEY (scorer_id, candidate_id, step_index)
);

-- Accuracy of a selection rule at budget n, from resampling n-subsets of the bank:
-- mean over resamples and problems, with a percentile interval that also resamples problems.
CREATE TABLE IF NOT EXISTS selection_curves (
    bank_id     VARCHAR NOT NULL,
    scorer_id   VARCHAR NOT NULL,
    run_id      VARCHAR NOT NULL,
    rule        VARCHAR NOT NULL,   -- oracle | majority | best_of_n | weighted
    aggregation VARCHAR NOT NULL,   -- last | min | prod | mean; '-' for rules without scores
    level       INTEGER NOT NULL,   -- 0 = all levels
    n           INTEGER NOT NULL,
    accuracy    DOUBLE NOT NULL,
    lo          DOUBLE NOT NULL,
    hi          DOUBLE NOT NULL,
    resamples   INTEGER NOT NULL,
    problems    INTEGER NOT NULL,
    PRIMARY KEY (bank_id, scorer_id, rule, aggregation, level, n)
);

-- Every node a search expanded: the path's last step, its PRM score and what it cost.
CREATE TABLE IF NOT EXISTS search_nodes (
    node_id          VARCHAR PRIMARY KEY,  -- hash(search_key, problem, parent, index, round)
    search_key       VARCHAR NOT NULL,     -- hash(strategy, N, M, k, seed, sampling, model, scorer)
    run_id           VARCHAR NOT NULL,
    problem_id       VARCHAR NOT NULL,
    strategy         VARCHAR NOT NULL,
    budget           INTEGER NOT NULL,     -- N
    width            INTEGER NOT NULL,     -- M
    lookahead        INTEGER NOT NULL,     -- k
    seed             INTEGER NOT NULL,
    parent_id        VARCHAR,
    depth            INTEGER NOT NULL,     -- 0 = first step (best-of-N: the whole solution)
    subtree          INTEGER NOT NULL,
    text             VARCHAR NOT NULL,
    score            DOUBLE NOT NULL,
    prompt_tokens    INTEGER NOT NULL,
    generated_tokens INTEGER NOT NULL,
    scored_tokens    INTEGER NOT NULL,
    lookahead_steps  INTEGER NOT NULL,
    lookahead_prompt_tokens    INTEGER NOT NULL,
    lookahead_generated_tokens INTEGER NOT NULL,
    finished         BOOLEAN NOT NULL,
    kept             BOOLEAN NOT NULL
);

-- The answer each search picked per problem, and what the search spent on it.
CREATE TABLE IF NOT EXISTS selections (
    search_key       VARCHAR NOT NULL,
    problem_id       VARCHAR NOT NULL,
    run_id           VARCHAR NOT NULL,
    scorer_id        VARCHAR NOT NULL,
    strategy         VARCHAR NOT NULL,
    budget           INTEGER NOT NULL,
    width            INTEGER NOT NULL,
    lookahead        INTEGER NOT NULL,
    seed             INTEGER NOT NULL,
    answer           VARCHAR,
    correct          BOOLEAN NOT NULL,
    finals           INTEGER NOT NULL,     -- final candidates it chose among (best-of-N weighted)
    charged          INTEGER NOT NULL,     -- budget in the paper's unit: N, or N(k+1) with lookahead
    generations      INTEGER NOT NULL,     -- steps (or solutions) actually generated, rollouts included
    prompt_tokens    BIGINT NOT NULL,
    generated_tokens BIGINT NOT NULL,
    scored_tokens    BIGINT NOT NULL,
    flops            DOUBLE NOT NULL,      -- 2 * params * tokens, generator and PRM
    PRIMARY KEY (search_key, problem_id)
);

-- Parquet shard folders (one per chunk, written by workers that must not open this file)
-- already ingested by the loader: loading twice adds nothing.
CREATE TABLE IF NOT EXISTS loaded_shards (
    path      VARCHAR PRIMARY KEY,
    loaded_at TIMESTAMP NOT NULL
);

-- Revision training data: incorrect attempts (most similar to the target last), then a correct one.
CREATE TABLE IF NOT EXISTS revision_trajectories (
    trajectory_id VARCHAR PRIMARY KEY,   -- hash(data_id, problem, target, context)
    data_id       VARCHAR NOT NULL,      -- hash(solutions bank, trajectory settings)
    problem_id    VARCHAR NOT NULL,
    context       VARCHAR[] NOT NULL,    -- incorrect solutions, least similar first
    distances     INTEGER[] NOT NULL,    -- character edit distance of each to the target
    target        VARCHAR NOT NULL       -- a correct solution
);

-- Every attempt of every revision chain: position 0 sees no earlier attempt, position t
-- sees the last `window` attempts of its chain.
CREATE TABLE IF NOT EXISTS revision_attempts (
    attempt_id       VARCHAR PRIMARY KEY,  -- hash(chain_set_id, problem, chain, position)
    chain_set_id     VARCHAR NOT NULL,     -- hash(reviser, purpose, chain lengths, window, sampling)
    run_id           VARCHAR NOT NULL,
    problem_id       VARCHAR NOT NULL,
    chain            INTEGER NOT NULL,
    position         INTEGER NOT NULL,
    text             VARCHAR NOT NULL,
    final_answer     VARCHAR,
    correct          BOOLEAN NOT NULL,
    prompt_tokens    INTEGER NOT NULL,
    generated_tokens INTEGER NOT NULL,
    flops            DOUBLE NOT NULL,
    created_at       TIMESTAMP NOT NULL
);

-- A verifier's score of one attempt: the ORM's, or the PRM's last-step score.
CREATE TABLE IF NOT EXISTS revision_scores (
    attempt_id VARCHAR NOT NULL,
    verifier   VARCHAR NOT NULL,   -- orm | prm
    scorer_id  VARCHAR NOT NULL,   -- which weights
    score      DOUBLE NOT NULL,
    PRIMARY KEY (attempt_id, verifier, scorer_id)
);

-- The answer each rule picked for a problem at budget N with chains of length L.
CREATE TABLE IF NOT EXISTS revision_selections (
    chain_set_id VARCHAR NOT NULL,
    run_id       VARCHAR NOT NULL,
    problem_id   VARCHAR NOT NULL,
    chain_set    INTEGER NOT NULL,   -- independent repeat of the sweep
    budget       INTEGER NOT NULL,   -- N
    length       INTEGER NOT NULL,   -- L: N/L chains of L attempts
    rule         VARCHAR NOT NULL,   -- oracle | {majority,orm,prm}_{flat,hier}
    final_answer VARCHAR,
    correct      BOOLEAN NOT NULL,
    PRIMARY KEY (chain_set_id, run_id, problem_id, chain_set, budget, length, rule)
);

-- Difficulty per test problem: oracle (base model pass@1 from the bank) or predicted
-- (mean final-step PRM score of the first `samples` bank candidates), in quantile bins
-- (bin 1 easiest), with what estimating it cost.
CREATE TABLE IF NOT EXISTS difficulty (
    bank_id    VARCHAR NOT NULL,
    scorer_id  VARCHAR NOT NULL,   -- '-' for oracle bins
    run_id     VARCHAR NOT NULL,
    problem_id VARCHAR NOT NULL,
    kind       VARCHAR NOT NULL,   -- oracle | predicted
    value      DOUBLE NOT NULL,    -- pass@1, or mean final-step score
    bin        INTEGER NOT NULL,
    samples    INTEGER NOT NULL,   -- generations read to estimate it
    tokens     BIGINT NOT NULL,    -- their tokens (predicted: plus the PRM's)
    flops      DOUBLE NOT NULL,
    PRIMARY KEY (bank_id, scorer_id, problem_id, kind)
);

-- The compute-optimal policy fitted on all problems of a source (for serving): per
-- difficulty bin and budget, the strategy with the best accuracy, and the bin's value range.
CREATE TABLE IF NOT EXISTS allocation_policy (
    run_id     VARCHAR NOT NULL,
    source     VARCHAR NOT NULL,   -- search | revisions
    bin_kind   VARCHAR NOT NULL,   -- oracle | predicted
    bin        INTEGER NOT NULL,
    budget     INTEGER NOT NULL,
    strategy   VARCHAR NOT NULL,
    accuracy   DOUBLE NOT NULL,    -- in-sample, on the bin's problems
    problems   INTEGER NOT NULL,
    value_min  DOUBLE NOT NULL,    -- the bin's difficulty values, to place a new problem
    value_max  DOUBLE NOT NULL,
    PRIMARY KEY (run_id, source, bin_kind, bin, budget)
);

-- Held-out (2-fold cross-validated) results per budget: the compute-optimal policy vs
-- best-of-N, the best-of-N budget that matches it, and the global allocator at equal compute.
CREATE TABLE IF NOT EXISTS allocation_results (
    run_id              VARCHAR NOT NULL,
    source              VARCHAR NOT NULL,
    bin_kind            VARCHAR NOT NULL,
    budget              INTEGER NOT NULL,
    baseline            VARCHAR NOT NULL,  -- the strategy efficiency is measured against
    problems            INTEGER NOT NULL,  -- held-out problems each accuracy averages over
    optimal_accuracy    DOUBLE NOT NULL,
    optimal_lo          DOUBLE NOT NULL,   -- 95% Wilson interval over the problems
    optimal_hi          DOUBLE NOT NULL,
    baseline_accuracy   DOUBLE NOT NULL,
    equivalent_budget   DOUBLE NOT NULL,   -- best-of-N budget reaching optimal_accuracy
    ratio               DOUBLE NOT NULL,   -- equivalent_budget / budget
    ratio_charged       DOUBLE NOT NULL,   -- equivalent_budget / (budget + estimation samples)
    censored            VARCHAR NOT NULL,  -- '' exact, '>=' or '<=' at the end of the best-of-N curve
    allocator_accuracy  DOUBLE NOT NULL,   -- global allocator, estimation cost charged
    allocator_free_accuracy DOUBLE NOT NULL,  -- global allocator, estimation free (as the paper counts)
    uniform_accuracy    DOUBLE NOT NULL,   -- per-bin policy at a uniform budget
    PRIMARY KEY (run_id, source, bin_kind, budget)
);

-- The FLOPs-matched exchange: per R = D_inference / D_pretrain and oracle bin (0 = all), the
-- small model's accuracy at the matched number of samples vs the larger model's, greedy.
CREATE TABLE IF NOT EXISTS flops_exchange (
    run_id          VARCHAR NOT NULL,
    ratio           DOUBLE NOT NULL,    -- R
    bin             INTEGER NOT NULL,
    matched_samples DOUBLE NOT NULL,    -- N = 3 (k - 1) / R + k, k = P_large / P_small
    samples_used    DOUBLE NOT NULL,    -- the matched N, cut to the samples the bank holds for scoring
    lower_bound     BOOLEAN NOT NULL,   -- N exceeded the bank: the small model's figures are lower bounds
    problems        INTEGER NOT NULL,
    small_weighted  DOUBLE NOT NULL,    -- best-of-N weighted (PRM, last step)
    small_majority  DOUBLE NOT NULL,
    small_optimal   DOUBLE NOT NULL,    -- the better of the two per bin, chosen by 2-fold cross-validation
    large_greedy    DOUBLE NOT NULL,
    large_lo        DOUBLE NOT NULL,    -- 95% Wilson interval of the large model's accuracy
    large_hi        DOUBLE NOT NULL,
    winner          VARCHAR NOT NULL,   -- test-time compute | pretraining | tie
    PRIMARY KEY (run_id, ratio, bin)
);

-- New problems solved with the served compute-optimal policy: the difficulty estimated for
-- each (and what that cost), the strategy the policy chose at the budget, and the outcome.
CREATE TABLE IF NOT EXISTS policy_solutions (
    run_id            VARCHAR NOT NULL,
    problem_id        VARCHAR NOT NULL,
    budget            INTEGER NOT NULL,   -- asked
    value             DOUBLE NOT NULL,    -- predicted difficulty: mean final-step PRM score of fresh samples
    bin               INTEGER NOT NULL,
    strategy          VARCHAR NOT NULL,   -- the policy's choice
    charged           INTEGER NOT NULL,   -- budget spent in the paper's unit
    answer            VARCHAR,
    correct           BOOLEAN NOT NULL,
    estimate_tokens   BIGINT NOT NULL,    -- the difficulty estimate: samples and PRM reading
    search_tokens     BIGINT NOT NULL,
    flops             DOUBLE NOT NULL,    -- estimate and search together
    PRIMARY KEY (run_id, problem_id)
);

-- Held-out outcome of the compute-optimal policy per problem, budget and CV split (the problem was in
-- the fold the policy did not see), next to the baseline's outcome on the same problem at that budget.
CREATE TABLE IF NOT EXISTS allocation_outcomes (
    run_id        VARCHAR NOT NULL,
    source        VARCHAR NOT NULL,   -- search | revisions
    bin_kind      VARCHAR NOT NULL,   -- oracle | predicted
    budget        INTEGER NOT NULL,
    split         INTEGER NOT NULL,
    problem_id    VARCHAR NOT NULL,
    bin           INTEGER NOT NULL,
    optimal       DOUBLE NOT NULL,    -- accuracy (share of seeds) of the strategy the held-out policy chose
    baseline      DOUBLE NOT NULL,
    baseline_name VARCHAR NOT NULL,
    choosable     INTEGER NOT NULL,   -- different strategies the policy could choose at this budget (1 at N = 1)
    PRIMARY KEY (run_id, source, bin_kind, budget, split, problem_id)
);

-- The FLOPs-matched exchange per problem: the small model's expected accuracy at its matched number of
-- samples (read from bank samples disjoint from those that set the bins) and the larger model's greedy answer.
CREATE TABLE IF NOT EXISTS exchange_outcomes (
    run_id           VARCHAR NOT NULL,
    ratio            DOUBLE NOT NULL,    -- R
    verifier_charged BOOLEAN NOT NULL,   -- the PRM's labeling, training and scoring FLOPs charged to the small side
    problem_id       VARCHAR NOT NULL,
    bin              INTEGER NOT NULL,
    samples          DOUBLE NOT NULL,    -- the matched N, exactly (subsets of any size are resampled)
    small            DOUBLE NOT NULL,
    large            DOUBLE NOT NULL,
    PRIMARY KEY (run_id, ratio, verifier_charged, problem_id)
);

-- Every comparison behind the findings report: A (the side the paper says wins) vs B on the same problems
-- at the same charged budget, the paired bootstrap interval of A - B, and the verdicts that follow.
CREATE TABLE IF NOT EXISTS findings (
    run_id             VARCHAR NOT NULL,   -- the report run
    finding            INTEGER NOT NULL,   -- 1..6 (PAPER.md)
    comparison         INTEGER NOT NULL,
    claim              VARCHAR NOT NULL,   -- the part of the finding this comparison tests
    a                  VARCHAR NOT NULL,
    b                  VARCHAR NOT NULL,
    stratum            VARCHAR NOT NULL,   -- all | level L | bin B
    budget             DOUBLE NOT NULL,    -- charged budget on both sides
    effect             DOUBLE NOT NULL,    -- mean per-problem A - B
    lo                 DOUBLE NOT NULL,
    hi                 DOUBLE NOT NULL,
    confidence         DOUBLE NOT NULL,    -- 0.95, Bonferroni-widened for the claim's family
    family             INTEGER NOT NULL,
    problems           INTEGER NOT NULL,
    detectable         DOUBLE NOT NULL,    -- smallest |A - B| these problems could show at 80% power
    problems_to_decide INTEGER,            -- problems an effect of this size would need
    headroom           DOUBLE,             -- the most A - B these problems allow (1 - B's accuracy); null: no ceiling
    could_show         BOOLEAN,            -- false: B leaves less room than the interval could detect
    unit               VARCHAR NOT NULL,   -- accuracy | log2 budget ratio
    decides            BOOLEAN NOT NULL,   -- false: detail (per level), not part of the verdict
    verdict            VARCHAR NOT NULL,   -- reproduced | contradicted | inconclusive | not measured
    claim_verdict      VARCHAR NOT NULL,
    finding_verdict    VARCHAR NOT NULL,
    bank_id            VARCHAR,
    scorer_id          VARCHAR,
    PRIMARY KEY (run_id, finding, comparison)
);

-- Added 12-08: a warehouse made before keeps its findings rows (null: not computed then).
ALTER TABLE findings ADD COLUMN IF NOT EXISTS headroom DOUBLE;
ALTER TABLE findings ADD COLUMN IF NOT EXISTS could_show BOOLEAN;

-- Embedded task only: whether each stored step is right given the step before it (as written), and if
-- not, why (tasks/arith.py STEP_ERRORS). For diagnosis and ceilings; never a training label or a selection.
CREATE TABLE IF NOT EXISTS step_truth (
    candidate_id VARCHAR NOT NULL,
    step_index   INTEGER NOT NULL,
    error        VARCHAR,            -- NULL: right; format | rule | copy | countdown | arithmetic | answer
    PRIMARY KEY (candidate_id, step_index)
);
