-- 0015_reviews: the reviewers' verdicts on a task's PR, one row per reviewer and head commit
-- (a retried attempt is a new head: an earlier attempt's verdicts never count for it). The
-- task's `review_status` holds the summary; these rows hold each verdict, its summary, its
-- line comments, how long the reviewer took and what it cost when the provider says.
CREATE TABLE fleet_reviews (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id      UUID NOT NULL REFERENCES fleet_tasks (id) ON DELETE CASCADE,
    operator_id  TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    head_sha     TEXT NOT NULL,
    reviewer     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    model        TEXT NOT NULL,
    verdict      TEXT NOT NULL,
    summary      TEXT NOT NULL DEFAULT '',
    comments     JSONB NOT NULL DEFAULT '[]'::jsonb,
    error        TEXT,
    duration_ms  INTEGER,
    cost_usd     NUMERIC(12, 6),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT valid_review_operator_id CHECK (operator_id <> ''),
    CONSTRAINT valid_review_attempt CHECK (attempt >= 1),
    CONSTRAINT valid_review_verdict CHECK (verdict IN ('approve', 'request_changes', 'comment')),
    CONSTRAINT valid_review_reviewer CHECK (reviewer <> '' AND length(reviewer) <= 100),
    CONSTRAINT valid_review_summary CHECK (length(summary) <= 20000),
    CONSTRAINT valid_review_comments CHECK (jsonb_typeof(comments) = 'array'),
    CONSTRAINT valid_review_duration CHECK (duration_ms IS NULL OR duration_ms >= 0),
    CONSTRAINT valid_review_cost CHECK (cost_usd IS NULL OR cost_usd >= 0),
    CONSTRAINT fleet_reviews_one_per_head UNIQUE (task_id, head_sha, reviewer)
);

CREATE INDEX fleet_reviews_task_idx ON fleet_reviews (task_id, attempt);

ALTER TABLE fleet_reviews ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_reviews FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_reviews_tenant ON fleet_reviews
    USING (operator_id = current_setting('app.operator_id', true)
           OR current_setting('app.is_admin', true) = 'true')
    WITH CHECK (operator_id = current_setting('app.operator_id', true)
                OR current_setting('app.is_admin', true) = 'true');

GRANT SELECT, INSERT, UPDATE, DELETE ON fleet_reviews TO fleet_engine;
