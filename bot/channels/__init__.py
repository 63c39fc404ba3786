"""Channels: how messages reach panellists. Each channel module owns its SDK imports."""

from bot.channels.base import Channel

__all__ = ["Channel"]


def build_channels(settings) -> dict[str, Channel]:
    """The enabled channels, keyed by every address channel each one serves."""
    channels: dict[str, Channel] = {}
    if settings.channels.simulator.enabled:
        from bot.channels.simulator import SimulatorChannel

        sim = SimulatorChannel(settings.channels.simulator.rate_per_second)
        channels["sim"] = sim
    if settings.channels.twilio.enabled:
        from bot.channels.twilio import TwilioChannel

        twilio = TwilioChannel(settings)
        channels["sms"] = channels["whatsapp"] = twilio
    if settings.channels.telegram.enabled:
        from bot.channels.telegram import TelegramChannel

        channels["telegram"] = TelegramChannel(settings)
    return channels
