"""Entry point for `ray job submit`: deploy the medmix HTTP API on the cluster the job runs in.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/serve.py --model medmix@champion --host 0.0.0.0 --detach

With --detach the job deploys the app and ends; the app keeps serving on the cluster (Serve
apps outlive the driver that deployed them) until `serve delete medmix` or `serve shutdown`.
Without it the job blocks and shuts Serve down when stopped (`ray job stop`).
"""

import sys

from medmix.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
