"""The bridge: Amazon Seller Central (merchant-fulfilled) to a warehouse's SFTP flat files."""

from pathlib import Path

__version__ = "0.1.0"
DEFAULT_CONFIG_PATH = Path("/etc/fbm-bridge/bridge.toml")  # bridge.config's too
