"""``python -m scripts.build_embedded``: rebuild src/archlab/data/embedded."""

import sys

from scripts.build_embedded.build import main

sys.exit(main())
