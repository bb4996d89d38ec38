"""Fast backends. Each module imports its library lazily, inside ``create_backend()``."""
