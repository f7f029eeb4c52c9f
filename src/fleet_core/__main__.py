import sys

from fleet_core.cli.main import main

sys.exit(main())
