"""The bridge: Amazon Seller Central (merchant-fulfilled) to a warehouse's SFTP flat files."""

__version__ = "0.1.0"
