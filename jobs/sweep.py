"""Entry point for `ray job submit`: the same job as `medmix sweep`, on the cluster it runs in.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/sweep.py --preset sweep_debug --set sweep.num_samples=32
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/sweep.py analyze sweep_debug

Re-submitting with the same name resumes the sweep (Tune state and MLflow runs are reused).
"""

import sys

from medmix.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
