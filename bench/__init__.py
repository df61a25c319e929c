"""The Streamer benchmark: ``python -m bench`` (``make bench``; ``QUICK=1`` for a short run)."""
