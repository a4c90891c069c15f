# Tiny Spatial-AST for the CPU demo: python train_encoder.py config/demo_encoder.py
# Settings marked "demo" differ from the official recipe so that a 1.4M model learns in minutes (docs/findings.md).
out_dir = 'out/demo/encoder'
sources = 'out/demo/sources/sources.jsonl'
render_dir = 'out/demo/rirs'
device = 'cpu'
clip_seconds = 2.0       # demo clips (official 10 s): 201 feature frames
rir_seconds = 0.5        # the demo IRs are 0.5 s
n_frames = 112           # 112 frames x 128 mels in 16 x 16 patches = 7 x 8 = 56 tokens (+3 CLS)
dim = 128                # a ViT 128 wide and 6 blocks deep (official 768 x 12): minutes on a CPU
depth = 6                # demo: more depth to turn the level difference into direction (3 blocks lose most of it)
n_heads = 4
ipd_scale = 100.0        # demo: bring the mel IPD (std ~0.016) to the log-mels' scale from the first step
stem_channels = 4        # demo: spectra and phases each get a channel, so a small model learns class and direction
mid_side = True          # demo: L - R on a scale of its own, so that a few dB of level difference stand out
drop_path = 0.0          # a run this short needs no regulariser of a 100-epoch recipe
mask_t_prob = 0.0        # likewise no patch masking
mask_f_prob = 0.0
time_mask = 20           # SpecAugment scaled to 112 frames (~192/1024 of them, as the official)
freq_mask = 24
mixup_prob = 0.0         # single sources: mixup (same IR) adds nothing spatial and slows a short run
w_class = 30.0           # demo: 25 classes; 1250 is sized for 355 and would drown the spatial losses
w_distance = 4.0         # demo: the distance head needs more weight to be learned in a short run
sigma_deg = 10.0         # demo: Gaussian angle targets, neighbouring bins share the gradient
sigma_dist = 1.0         # demo: likewise for distance (in 0.5 m bins)
batch_size = 16
learning_rate = 5e-3     # high, with layer decay below: heads start at ~0
layer_decay = 0.6        # the blocks below the heads learn slower
weight_decay = 5e-4
grad_clip = 1.0          # a high lr needs a guard against the odd large step
warmup_iters = 30
max_iters = 2500         # ~6.5 min on 2 cores
eval_interval = 1250     # each eval (200 items + baselines) costs ~10 s
eval_items = 200         # every eval clip (100) twice, each with its own fixed eval-room IR
log_interval = 50
spec_masks = 'item'      # a mask pair per example, as the demo was tuned (the official model draws one per batch)
