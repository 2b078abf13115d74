"""medmix.evaluate: per-task metrics of a model, and the generalist-vs-specialist report.

    runner.py     `evaluate(cfg, model_ref)`: resolve the model, pick tasks, predict, score, log
    predict.py    batch prediction over shard-store rows (generation and option scoring)
    metrics.py    the registry's per-task metrics (scikit-learn, sacrebleu, rouge-score, F1s)
    labeler.py    rule-based CXR report labeler for the clinical-efficacy report metric
    report.py     Markdown table, bar chart, raw JSON
    transfer.py   `medmix report transfer`: generalist vs specialists at matched compute (the same total, and each task's own budget) with intervals, ablation
    config.py     `[eval]`
"""
