import sys

from almhookd.cli import main

sys.exit(main())
