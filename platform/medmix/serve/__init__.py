"""medmix.serve: the HTTP API on Ray Serve (`medmix serve`).

    config.py   ServeConfig: address, batching, replicas, GPUs, request limits ([serve] section)
    schemas.py  request/response bodies (pydantic; the OpenAPI at /docs)
    inputs.py   request -> model inputs through the training code path (images, prompts)
    models.py   --model (registry ref, export, checkpoint) -> served versions with lineage
    runner.py   batches of prepared requests through one model (generate, score_options)
    app.py      the deployments (FastAPI ingress, batched multiplexed model) and build_app
    http.py     routes, JSON errors, middleware;  auth.py bearer token;  limits.py body size
    server.py   start/stop/serve_forever and the `serve deploy` YAML;  client.py  ask()
"""
