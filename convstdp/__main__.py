import sys

from convstdp.cli import main

sys.exit(main())
