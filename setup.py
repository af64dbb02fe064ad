"""Builds streamlog's C extensions (each the hot path of one Python module,
see docs/architecture.md); everything else is in pyproject.toml.
``tools/build_ext.py`` builds them in place from EXTENSIONS."""

from setuptools import Extension, setup

EXTENSIONS = [
    Extension("streamlog._ingest", ["streamlog/_ingest.c"]),  # StreamWriter.add's common case, the recorder's loop
    Extension("streamlog._crc", ["streamlog/_crc.c"]),  # the blocks' crc32 (records/v2.py)
    Extension("streamlog._scan", ["streamlog/_scan.c"]),  # reading records.v2 blocks: a chunk's check, a block's keys
]

if __name__ == "__main__":  # pip's build backend runs this file as __main__ too
    setup(ext_modules=EXTENSIONS)
