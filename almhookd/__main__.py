import sys

from almhookd.cli.main import main

sys.exit(main())
