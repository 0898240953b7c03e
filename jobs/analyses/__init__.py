"""Analyses: figures and tables from measured data (never inside the measurement itself)."""
