"""Build streamlog._ingest in place, for a source tree used through
PYTHONPATH without ``pip install`` (which builds it): ``python tools/build_ext.py``
from the project root; ``import streamlog`` refuses to work without it."""

import os
import runpy
import sys

from setuptools import Distribution


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(root)
    extension = runpy.run_path("setup.py", run_name="setup")["EXTENSION"]
    dist = Distribution({"name": "streamlog", "ext_modules": [extension]})
    build = dist.get_command_obj("build_ext")
    build.inplace = True
    build.force = True  # the timestamps of a checkout say nothing about which source a built file is of
    dist.run_command("build_ext")
    print(f"built {build.get_ext_fullpath(extension.name)}")


if __name__ == "__main__":
    sys.exit(main())
