"""``python -m pairloss``: the same command line as ``pairloss`` (needs the ``cli`` extra)."""

from pairloss.app.cli import app

app(prog_name="pairloss")
