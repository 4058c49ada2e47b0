"""hyperrl: hypernetwork critics and actors for reinforcement learning (Sarafian, Keynan, Kraus, ICML 2021)."""

__version__ = "0.1.0"
