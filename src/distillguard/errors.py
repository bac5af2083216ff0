"""Exceptions raised by distillguard.

Every error derives from :class:`DistillguardError`, so callers can catch one type::

    DistillguardError
    ├── InputError          no readable input, unknown format, unwritable output
    ├── RecordRejected      one traffic-log record is invalid (carries the reason)
    ├── ConfigError         a policy, key or config file is invalid
    ├── UpstreamError       the upstream model server failed (gateway)
    └── StateBackendError   the shared state backend (Redis) is unreachable
"""

from __future__ import annotations


class DistillguardError(Exception):
    """Root of every distillguard exception."""


class InputError(DistillguardError):
    """The run cannot read its input or write its output."""


class RecordRejected(DistillguardError):
    """A single traffic-log record is invalid; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ConfigError(DistillguardError):
    """A configuration, policy or key file is invalid."""


class UpstreamError(DistillguardError):
    """The upstream model server failed or timed out."""


class StateBackendError(DistillguardError):
    """The shared state backend (Redis) is unreachable."""
