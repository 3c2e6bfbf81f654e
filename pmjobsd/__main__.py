import sys

from pmjobsd.cli import main

sys.exit(main())
