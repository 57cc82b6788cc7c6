class LoadError(ValueError):
    """A weights file could not be loaded safely: malformed, truncated, hostile
    or unsupported. The message says why. Nothing from the file was executed."""
