"""``python -m streamlog``: the same command as the ``streamlog`` script."""

from streamlog.cli import main

main(prog_name="streamlog")
