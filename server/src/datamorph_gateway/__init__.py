"""DataMorph Gateway: gRPC (and, through Envoy, REST) access to PostgreSQL, workflows and logs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("datamorph-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
