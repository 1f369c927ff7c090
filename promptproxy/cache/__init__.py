"""The exact response cache: keys, the store, and assembling streams to cache whole."""
