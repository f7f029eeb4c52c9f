-- Reverses 0012_notify_copy: values not yet sealed go back where they came from (sealed ones
-- stay encrypted in fleet_notify_channels: the database cannot decrypt them).
-- The tables FORCE row-level security, also for their owner: see every row (this transaction only).
SELECT set_config('app.is_admin', 'true', true);

UPDATE fleet_config c SET discord_webhook_url = n.secret_plain
  FROM fleet_notify_channels n
 WHERE n.operator_id = c.operator_id AND n.channel = 'discord' AND n.secret_plain IS NOT NULL;
UPDATE fleet_config c SET telegram_bot_token = n.secret_plain, telegram_chat_id = n.target
  FROM fleet_notify_channels n
 WHERE n.operator_id = c.operator_id AND n.channel = 'telegram' AND n.secret_plain IS NOT NULL;
DELETE FROM fleet_notify_channels WHERE secret_plain IS NOT NULL AND secret_enc IS NULL;
ALTER TABLE fleet_notify_channels DROP COLUMN IF EXISTS secret_plain;
