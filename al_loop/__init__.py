"""Active learning for mapping Martian pits and skylights: SAM, a domain decoder, Label Studio."""
__version__ = "0.1.0"
