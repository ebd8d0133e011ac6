"""Lakehouse catalogue, storage paths and JVM-free readers (below every other package)."""
