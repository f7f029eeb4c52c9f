-- Reverses 0013_notify_contract: the columns come back empty (0012's down refills the values
-- that were never sealed).
ALTER TABLE fleet_config
    ADD COLUMN IF NOT EXISTS discord_webhook_url TEXT,
    ADD COLUMN IF NOT EXISTS telegram_bot_token TEXT,
    ADD COLUMN IF NOT EXISTS telegram_chat_id TEXT;
