-- Mailstead schema, version 16: SMTP TLS reporting (RFC 8460). The outcome of our outbound TLS
-- sessions counted per UTC day, policy and failure (the raw material of the daily reports we
-- send), which reports went out (once per day and policy domain, whichever node sends them),
-- and the reports other senders mailed to us.

-- result_type is '' for a successful session, else an RFC 8460 section 4.3 result type;
-- policy_string is the applied policy's lines joined by LF ('' for no-policy-found).
CREATE TABLE tls_results (
    day           TEXT NOT NULL,
    policy_domain TEXT NOT NULL,
    policy_type   TEXT NOT NULL,
    policy_string TEXT NOT NULL,
    result_type   TEXT NOT NULL,
    mx_host       TEXT NOT NULL,
    receiving_ip  TEXT NOT NULL,
    sessions      INTEGER NOT NULL,
    PRIMARY KEY (day, policy_domain, policy_type, policy_string, result_type, mx_host,
                 receiving_ip)
);

CREATE TABLE tls_reports_sent (
    day           TEXT NOT NULL,
    policy_domain TEXT NOT NULL,
    sent_at       REAL NOT NULL,
    PRIMARY KEY (day, policy_domain)
);

-- One row per received report (organization, report_id as the sender names it); ``report`` is
-- its JSON as received (bounded by the parser).
CREATE TABLE tls_reports_received (
    id            INTEGER PRIMARY KEY,
    received_at   REAL NOT NULL,
    organization  TEXT NOT NULL,
    report_id     TEXT NOT NULL,
    start_time    TEXT NOT NULL,
    end_time      TEXT NOT NULL,
    policy_domain TEXT NOT NULL,
    successes     INTEGER NOT NULL,
    failures      INTEGER NOT NULL,
    report        TEXT NOT NULL,
    UNIQUE (organization, report_id)
);
CREATE INDEX tls_reports_received_at ON tls_reports_received (received_at);
