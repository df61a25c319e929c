"""Who is connected and how a frame reaches a socket (registry, tenants, transports)."""
