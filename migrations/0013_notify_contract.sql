-- 0013_notify_contract: the plaintext columns are gone (their values were copied by 0012).
ALTER TABLE fleet_config
    DROP COLUMN discord_webhook_url,
    DROP COLUMN telegram_bot_token,
    DROP COLUMN telegram_chat_id;
