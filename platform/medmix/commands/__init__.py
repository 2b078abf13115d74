"""One module per `medmix` verb: `add_parser(subparsers)` and `run(args)`."""
