"""The spark-submit entry: `spark-submit ... spark_submit.py ARGS` runs `tritonkit score --engine spark ARGS`."""

import sys

from tritonkit.cli import main

if __name__ == "__main__":
    sys.argv = ["tritonkit", "score", "--engine", "spark", *sys.argv[1:]]
    main()
