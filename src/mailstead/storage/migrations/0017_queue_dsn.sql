-- Mailstead schema, version 17: what each outbound recipient asked of delivery status
-- notifications (RFC 3461) and of TLS (RFC 8689), so the queue honours it in its bounces,
-- delay warnings and success notices and passes it on to the next hop.
-- dsn_notify: NULL when RCPT had no NOTIFY (section 4.1 default), else "NEVER" or a comma
-- list of SUCCESS, FAILURE, DELAY. dsn_orcpt: "addr-type;address" (section 4.2), decoded.
-- dsn_ret / dsn_envid: the message's RET (FULL/HDRS) and ENVID (sections 4.3, 4.4).
-- requiretls: MAIL FROM ... REQUIRETLS (RFC 8689 section 4): relay only over verified TLS.
ALTER TABLE queue ADD COLUMN dsn_notify TEXT;
ALTER TABLE queue ADD COLUMN dsn_orcpt TEXT;
ALTER TABLE queue ADD COLUMN dsn_ret TEXT;
ALTER TABLE queue ADD COLUMN dsn_envid TEXT;
ALTER TABLE queue ADD COLUMN requiretls INTEGER NOT NULL DEFAULT 0;
