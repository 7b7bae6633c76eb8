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
