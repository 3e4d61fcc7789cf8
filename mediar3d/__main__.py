import sys

from mediar3d.cli import main

sys.exit(main())
