"""The ``bastion`` command line: Typer commands that parse, call :mod:`bastion.api`, render, exit."""
