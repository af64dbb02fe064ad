"""Build streamlog's C extensions (setup.py EXTENSIONS) in place, for a source tree used through
PYTHONPATH without ``pip install`` (which builds them): ``python tools/build_ext.py``
from the project root; ``import streamlog`` refuses to work without it."""

import os
import runpy
import sys

from setuptools import Distribution


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(root)
    extensions = runpy.run_path("setup.py", run_name="setup")["EXTENSIONS"]
    dist = Distribution({"name": "streamlog", "ext_modules": extensions})
    build = dist.get_command_obj("build_ext")
    build.inplace = True
    build.force = True  # the timestamps of a checkout say nothing about which source a built file is of
    dist.run_command("build_ext")
    for extension in extensions:
        print(f"built {build.get_ext_fullpath(extension.name)}")


if __name__ == "__main__":
    sys.exit(main())
