"""Which input tokens feed a linear's statistics: one module per selector (all_tokens, amia, attention,
random_tokens, modality), each holding its settings, its registry binding and its math.

AMIA's token choice, the stable entry point, is `tamp.tokens.amia.select_tokens`.
"""
