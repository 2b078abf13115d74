"""Entry point for `ray job submit`: the same job as `medmix evaluate`, on the cluster it runs in.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/evaluate.py --model medmix@champion --set eval.split=test
"""

import sys

from medmix.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
