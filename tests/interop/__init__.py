"""Interop tests: our actors against SIPp over loopback, captured and decoded by tshark."""
