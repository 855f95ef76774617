import sys

from adnlib.cli import main

sys.exit(main())
