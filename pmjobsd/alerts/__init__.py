"""Alerting: sinks (desktop, JSON webhook, apprise URLs) and the AlertManager run observer."""

from .base import DeliveryError, Message, NoopSink, Sink
from .manager import AlertManager
from .targets import SinkPlan, build_sinks

__all__ = ["AlertManager", "DeliveryError", "Message", "NoopSink", "Sink", "SinkPlan", "build_sinks"]
