"""``python -m recstack.serving.grpc SERVICE --port N ...``: one service in this process."""

import sys

from recstack.serving.grpc.server import main

sys.exit(main())
