# demo: QA items from the demo bank (out/demo/sources) and the demo IRs (out/demo/rirs) -> out/demo/qa
sources = 'out/demo/sources/sources.jsonl'
render_dir = 'out/demo/rirs'
out_dir = 'out/demo/qa'
train_counts = {'CLASSIFICATION': 1500, 'DOA': 1500, 'MIXUP_SINGLE_CLASSIFICATION': 1500, 'MIXUP_SINGLE_DOA': 1500,
                'MIXUP_DIRECTION': 1000, 'MIXUP_DISTANCE_BOTH': 1000, 'MIXUP_NONBINARY_DIRECTION': 334,
                'MIXUP_NONBINARY_DISTANCE': 333, 'MIXUP_NONBINARY_SOURCE': 333}  # E: 3000 over its kinds
# 500 eval items per type: one standard error of a balanced accuracy near 50 % is then ~2.2 points (3.5 at 200)
eval_counts = {t: 500 for t in train_counts}
word_noise = 0.2         # demo: a from-scratch LLM must learn to read eval phrasings it never saw (words dropped/swapped)
seed = 1337
