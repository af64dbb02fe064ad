"""Builds the one C extension, streamlog._ingest (the common case of
StreamWriter.add, see docs/architecture.md); everything else is in
pyproject.toml.  ``tools/build_ext.py`` builds it in place from EXTENSION."""

from setuptools import Extension, setup

EXTENSION = Extension("streamlog._ingest", ["streamlog/_ingest.c"])

if __name__ == "__main__":  # pip's build backend runs this file as __main__ too
    setup(ext_modules=[EXTENSION])
