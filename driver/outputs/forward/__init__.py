"""Fluent forward protocol v1: a pure codec (`codec`) and an asyncio transport (`client`).

The receiver in `driver.receiver` uses the same codec for the server side.
"""
