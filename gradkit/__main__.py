"""``python -m gradkit``: the same as the ``gradkit`` command."""

from gradkit.cli import run

run()
