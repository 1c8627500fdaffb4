"""python -m convspectra.bench [--quick] [--device cpu|cuda] [--json FILE]"""

import sys

from .run import main

sys.exit(main())
