"""Entry point for `ray job submit`: the same job as `medmix train`, on the cluster it runs in.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/train.py --preset base --set train.num_workers=8
"""

import sys

from medmix.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
