"""Alerting: sinks (desktop, JSON webhook, apprise URLs) and the AlertManager run observer."""

from pmjobsd.alerts.base import DeliveryError, Message, NoopSink, Sink
from pmjobsd.alerts.manager import AlertManager
from pmjobsd.alerts.targets import SinkPlan, build_sinks

__all__ = ["AlertManager", "DeliveryError", "Message", "NoopSink", "Sink", "SinkPlan", "build_sinks"]
