"""``python -m st_oblique ...`` = ``st-oblique ...`` (also for ``accelerate launch -m st_oblique`` and
``torchrun -m st_oblique``)."""

import sys

from st_oblique.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
