"""Channels: how messages reach panellists. Each channel module owns its SDK imports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.channels.base import Channel

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.ingress import Ingress

__all__ = ["Channel"]


def build_channels(settings: Settings, ingress: Ingress | None = None) -> dict[str, Channel]:
    """The enabled channels, keyed by every address channel each one serves; what they
    receive goes to ``ingress``."""
    channels: dict[str, Channel] = {}
    if settings.channels.simulator.enabled:
        from bot.channels.simulator import SimulatorChannel

        sim = SimulatorChannel(settings.channels.simulator.rate_per_second, ingress=ingress)
        channels["sim"] = sim
    if settings.channels.twilio.enabled:
        from bot.channels.twilio import TwilioChannel

        twilio = TwilioChannel(settings, ingress=ingress)
        channels["sms"] = channels["whatsapp"] = twilio
    if settings.channels.telegram.enabled:
        from bot.channels.telegram import TelegramChannel

        channels["telegram"] = TelegramChannel(settings, ingress=ingress)
    return channels
