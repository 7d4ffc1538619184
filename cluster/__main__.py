import sys

from augtrain.cluster.cli import main

sys.exit(main())
