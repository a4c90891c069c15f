# demo: QA items from the demo bank (out/demo/sources) and the demo IRs (out/demo/rirs) -> out/demo/qa
sources = 'out/demo/sources/sources.jsonl'
render_dir = 'out/demo/rirs'
out_dir = 'out/demo/qa'
train_counts = {'CLASSIFICATION': 1500, 'DOA': 1500, 'MIXUP_SINGLE_CLASSIFICATION': 1500, 'MIXUP_SINGLE_DOA': 1500,
                'MIXUP_DIRECTION': 1000, 'MIXUP_DISTANCE_BOTH': 1000, 'MIXUP_NONBINARY_DIRECTION': 334,
                'MIXUP_NONBINARY_DISTANCE': 333, 'MIXUP_NONBINARY_SOURCE': 333}  # E: 3000 over its kinds
eval_counts = {'CLASSIFICATION': 200, 'DOA': 200, 'MIXUP_SINGLE_CLASSIFICATION': 200, 'MIXUP_SINGLE_DOA': 200,
               'MIXUP_DIRECTION': 200, 'MIXUP_DISTANCE_BOTH': 200, 'MIXUP_NONBINARY_DIRECTION': 200,
               'MIXUP_NONBINARY_DISTANCE': 200, 'MIXUP_NONBINARY_SOURCE': 200}
seed = 1337
