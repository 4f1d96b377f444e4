"""Functional tests: the real SDK clients against the bundled emulator, storage on Azurite, the app served in this
process, the CLI in-process or as a subprocess, loopback HTTPS servers (JWKS, replay, token endpoint)."""
