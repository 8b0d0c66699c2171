"""Attest: self-hosted access reviews and entitlement management."""

__version__ = "0.1.0"
