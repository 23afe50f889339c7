"""The Ali-CCP source: raw format, parser, simulated event time, synthetic generator, replay."""
