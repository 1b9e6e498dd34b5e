"""Journal consumers: each reads the container's journal through its own persisted cursor."""
