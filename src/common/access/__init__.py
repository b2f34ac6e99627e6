"""Who may call the HTTP API: API keys with scopes, kept hashed."""
