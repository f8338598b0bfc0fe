-- wf:crashdemo: one mark per step; a step that ran twice shows seen_count > 1.
CREATE TABLE app.crashdemo_marks (
    workflow_id text NOT NULL,
    step        integer NOT NULL,
    seen_count  integer NOT NULL DEFAULT 1,
    pid         integer NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, step)
);
