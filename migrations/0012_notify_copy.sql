-- 0012_notify_copy: the plaintext Discord / Telegram settings of fleet_config move into
-- fleet_notify_channels. SQL cannot encrypt with the master key (it never reaches the
-- database), so a value waits in `secret_plain` until the engine seals it at its next start
-- (fleet_core.notify.settings.seal_pending: encrypt, store secret_enc, clear secret_plain).
-- The tables FORCE row-level security, also for their owner: see every row (this transaction only).
SELECT set_config('app.is_admin', 'true', true);

ALTER TABLE fleet_notify_channels
    ADD COLUMN secret_plain TEXT;

INSERT INTO fleet_notify_channels (operator_id, channel, secret_plain)
SELECT operator_id, 'discord', discord_webhook_url FROM fleet_config
 WHERE discord_webhook_url IS NOT NULL AND discord_webhook_url <> ''
ON CONFLICT (operator_id, channel) DO NOTHING;

INSERT INTO fleet_notify_channels (operator_id, channel, secret_plain, target)
SELECT operator_id, 'telegram', telegram_bot_token, NULLIF(telegram_chat_id, '') FROM fleet_config
 WHERE telegram_bot_token IS NOT NULL AND telegram_bot_token <> ''
ON CONFLICT (operator_id, channel) DO NOTHING;
