"""Unit tests: pure code on plain data and files; no emulator, Azurite, server or subprocess."""
