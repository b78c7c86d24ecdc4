"""SpeakDraw's network shell: aiohttp signaling, aiortc tracks, data channel, REST, TLS, CLI."""
