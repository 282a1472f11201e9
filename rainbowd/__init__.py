"""rainbowd: burns down the old colors of rainbow deploys once their connections have drained."""

__version__ = "0.1.0"
