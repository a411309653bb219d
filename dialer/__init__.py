"""dialer: a predictive-dialer campaign engine for the Zadarma cloud PBX."""

__version__ = "0.1.0"
