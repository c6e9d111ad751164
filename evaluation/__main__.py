"""``python -m evaluation {run,compare,list,speed} ...`` (see ``evaluation/README.md``)."""

from evaluation.speed import SPEED_COMMAND
from st_oblique.app.evaluation_options import main

if __name__ == "__main__":
    main(extra_commands=[SPEED_COMMAND])
