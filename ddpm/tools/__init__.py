"""Tools on top of the package: the command line (cli.py) and the speed benchmark (bench.py)."""
