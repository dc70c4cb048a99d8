"""The web front end (ASGI): client autoconfiguration, the Apple profile, the settings card."""
