"""Optional dependencies, imported only when a feature needs them.

Each extra of ``pyproject.toml`` names what it installs: ``pandas``
(``to_pandas``, ``join``), ``arrow`` (``to_arrow``, Parquet/Arrow/Feather
export), ``plot`` (``plot``).
"""

import importlib

from streamlog.errors import MissingExtra

EXTRAS = {"pandas": "pandas", "pyarrow": "arrow", "matplotlib": "plot"}


def require(module, feature):
    """Import and return ``module`` (e.g. ``"pyarrow.parquet"``); raise
    MissingExtra naming ``feature`` and the extra to install when missing."""
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{feature} needs {top}, which is not installed: "
                           f"pip install 'streamlog[{EXTRAS[top]}]' ({exc})") from exc
