-- Curves a user can get with SQL alone. Views are recreated on every read-write open.

-- pass@k per bank and level (0 = all), unbiased estimator 1 - C(n-c, k) / C(n, k)
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
FROM scored GROUP BY bank_id, level, k
UNION ALL
SELECT bank_id, 0 AS level, k, avg(pass), count(*)
FROM scored GROUP BY bank_id, k
ORDER BY bank_id, level, k;
