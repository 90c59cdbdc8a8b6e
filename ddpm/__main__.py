"""`python -m ddpm ...` and the `ddpm` console command: see ddpm/tools/cli.py."""
from .tools.cli import run

if __name__ == "__main__":
    run()
