"""Encryption of what the engine hands Temporal: master keys (keys) and the payload codec (codec)."""
