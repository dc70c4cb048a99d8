-- Mailstead schema, version 13: held for a change built on another branch; this file only
-- keeps the numbering whole (1, 2, 3, ...) until that one lands.
SELECT 1;
