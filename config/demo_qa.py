# demo: QA items from the demo bank (out/demo/sources) and the demo IRs (out/demo/rirs) -> out/demo/qa
sources = 'out/demo/sources/sources.jsonl'
render_dir = 'out/demo/rirs'
out_dir = 'out/demo/qa'
train_counts = {'CLASSIFICATION': 1500, 'DOA': 1500, 'MIXUP_SINGLE_CLASSIFICATION': 1500, 'MIXUP_SINGLE_DOA': 1500,
                'MIXUP_DIRECTION': 1000, 'MIXUP_DISTANCE_BOTH': 1000, 'MIXUP_NONBINARY_DIRECTION': 334,
                'MIXUP_NONBINARY_DISTANCE': 333, 'MIXUP_NONBINARY_SOURCE': 333}  # E: 3000 over its kinds
eval_counts = {'CLASSIFICATION': 80, 'DOA': 80, 'MIXUP_SINGLE_CLASSIFICATION': 80, 'MIXUP_SINGLE_DOA': 80,
               'MIXUP_DIRECTION': 80, 'MIXUP_DISTANCE_BOTH': 80, 'MIXUP_NONBINARY_DIRECTION': 80,
               'MIXUP_NONBINARY_DISTANCE': 80, 'MIXUP_NONBINARY_SOURCE': 80}
seed = 1337
