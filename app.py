"""TACO Studio. `python app.py --help` lists the commands."""

import sys

from taco_app.cli import main

if __name__ == "__main__":
    sys.exit(main())
