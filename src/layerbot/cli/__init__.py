"""The command line: ``main`` is the typer app (``layerbot``), ``lazy`` loads a command's
module only when it runs (see docs/architecture.md, "A fast CLI"); one module per group of
commands (``ops``, ``deploy``, ``init``, ``eessi``), and what `doctor` checks.
"""
