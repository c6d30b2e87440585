"""Cameras, dataset readers and the embedded synthetic scene."""
