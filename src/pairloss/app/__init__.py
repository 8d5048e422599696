"""The application layer: the ``pairloss`` command line, the demo, figures and progress bars.

It sits above every other layer (core losses, metrics, data and models, training, recipes) and is the only place
that needs the ``cli`` and ``plots`` extras (typer, rich, matplotlib).
"""
