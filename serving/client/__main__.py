import sys

from serving.client.cli import main

sys.exit(main())
