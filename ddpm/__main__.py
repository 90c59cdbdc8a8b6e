import sys

from .cli import main

try:
    main()
except (ValueError, FileNotFoundError) as err:     # bad input: one clear line, not a traceback
    sys.exit(f"python -m ddpm: error: {err}")
