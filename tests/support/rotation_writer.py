"""A log writer for the rotation tests: appends numbered lines as fast as it can.

Usage: python rotation_writer.py PATH STOP_FILE MODE
MODE ``append``: one open file in append mode, never reopened (like the app's
FileHandler).  MODE ``watched``: pmjobsd's WatchedFileHandler (reopens after a
rename).  Stops when STOP_FILE exists and prints the number of lines written.
"""

import logging
import os
import sys

path, stop_file, mode = sys.argv[1], sys.argv[2], sys.argv[3]
payload = "x" * 60  # a realistic line length
count = 0
if mode == "append":
    with open(path, "a", encoding="utf-8") as log:
        while not os.path.exists(stop_file):
            for _ in range(100):
                log.write(f"{count:09d} {payload}\n")
                log.flush()  # one write() per line, as logging.FileHandler does
                count += 1
else:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from pmjobsd.observe.joblog import PrivateWatchedFileHandler

    handler = PrivateWatchedFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("writer")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    while not os.path.exists(stop_file):
        for _ in range(100):
            logger.info("%09d %s", count, payload)
            count += 1
print(count)
