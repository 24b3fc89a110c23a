"""``python -m kdmos_ros.cli``: the kdmos command."""

import sys

from kdmos_ros.cli import main

sys.exit(main())
