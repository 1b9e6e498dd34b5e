"""The pipeline's outputs: one package each (codec, client, journal consumer, option rows)."""
