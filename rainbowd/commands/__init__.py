"""One module per `rainbowd` subcommand; each exposes `register(subparsers)`."""
