"""Test support (no tests here): launchers, loopback servers, tenant data and helpers shared by the test layers."""
