"""The Streamer project: settings, ASGI, the consumer, actions, the queue and the worker."""
