"""The trust layer: statistics taken on write, drift against the trailing days, checks of training sets."""
