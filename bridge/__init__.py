"""The bridge: Amazon Seller Central (merchant-fulfilled) to a warehouse's SFTP flat files."""

import sys
from pathlib import Path

__version__ = "0.1.0"
DEFAULT_CONFIG_PATH = Path("/etc/fbm-bridge/bridge.toml")  # bridge.config's too

# paramiko imports `invoke` (with its vendored yaml and unittest.mock: 16 MB of a service's 66)
# only to run ssh_config's "Match exec", and does without it when the import fails. The bridge
# reads no ssh_config, so it tells the import system there is no invoke (unless something has
# imported it already).
sys.modules.setdefault("invoke", None)
