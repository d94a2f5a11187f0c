import sys

from pipeline.localkafka.cli import main

sys.exit(main())
