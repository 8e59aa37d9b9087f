"""One module per ``samjax <verb>``; each exposes ``register(subparsers)``."""
