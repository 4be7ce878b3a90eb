"""Bank account linking: OAuth 2.0 authorization code + PKCE, refresh tokens in a secrets store."""
