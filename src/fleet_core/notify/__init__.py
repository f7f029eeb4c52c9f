"""Notifications and events that are never lost: the outbox worker (outbox.py), what it does
with one event (delivery.py), the channels (channels.py), the operators' channel settings
(settings.py), which events go where (events.py), status and redrive (status.py) and NATS
JetStream (nats.py)."""
