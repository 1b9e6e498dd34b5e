"""logbridge: a Docker logging-driver plugin.

Data path: FIFO --splice--> per-container journal --cursors--> json.log writer and every sink.
"""

__version__ = "0.1.0"
